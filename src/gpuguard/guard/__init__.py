"""The GPU lease: pure asyncio, no third-party dependency, nothing about LLMs.

* the front, :class:`GpuGuard` (``_guard``) and :class:`GpuSet`, one guard per GPU
  (``_gpu_set``), over the leases it grants (``_keeper``: the
  registry, grants and endings), each :class:`Lease` and ``async with`` :class:`Hold`
  (``_lease``, ``_hold``), the waiting line (``_queue``), queued leases (``_waiting``), hung
  and lost ones (``_hung``), counters and events (``_telemetry``), frozen views
  (``_snapshot``), options (``_options``), tracked GPU work (``_work``) and the newest
  fencing token seen, which refuses work under an older one (``_fences``);
* :mod:`~gpuguard.guard.policies`: who may hold the GPU at once (``exclusive``);
* :mod:`~gpuguard.guard.scopes`: how wide the lease is, one :class:`Arbiter` protocol
  (``_arbiter``) and one implementation per scope (``local``, ``host``, ``redis``). A scope
  imports the core's protocol; only the factory in :mod:`~gpuguard.guard.scopes` names them.
"""

from ._fences import FenceBook
from ._gpu_set import GpuSet
from ._guard import GpuGuard
from ._hold import Hold
from ._lease import Lease
from ._options import DEFAULT, DefaultType, OnHang, Timeout
from ._snapshot import GuardCounters, GuardSnapshot, HolderInfo, WaiterInfo
from ._work import StopWork, in_thread, run_to_end

__all__ = [
    "DEFAULT",
    "DefaultType",
    "FenceBook",
    "GpuGuard",
    "GpuSet",
    "GuardCounters",
    "GuardSnapshot",
    "Hold",
    "HolderInfo",
    "Lease",
    "OnHang",
    "StopWork",
    "Timeout",
    "WaiterInfo",
    "in_thread",
    "run_to_end",
]
