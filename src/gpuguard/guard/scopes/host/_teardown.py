"""A dead holder's GPU context outlives its file locks: wait, bounded, until it is gone.

The kernel drops a killed process's ``flock`` locks while it tears the process down; the GPU
driver frees its context (and memory) later in that teardown. Granting the next holder at the
lock's release would let it load beside memory that is still taken. Where the driver lists the
processes on the GPU (NVML; :mod:`gpuguard.devices`), the host scope records the dead holder
in the shared state and grants nobody until the driver no longer lists its pid, or until
``bound_s`` has passed (then it grants, and says so). Without such a list it grants at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from ...._exceptions import DevicesUnavailable
from .._proc import hostname
from ._state import Entry, State

__all__ = ["GpuPids", "TeardownWait"]

logger = logging.getLogger("gpuguard.guard")

GpuPids = Callable[[], Collection[int]]
"""The pids the driver lists on this GPU now; raises :class:`~gpuguard.DevicesUnavailable`
when it cannot tell."""

POLL_S = 0.05
"""How often waiters look again while a dead holder's context is torn down."""


class TeardownWait:
    """Holds grants back while a dead holder of this host is still listed on the GPU."""

    def __init__(self, gpu_pids: GpuPids | None, bound_s: float) -> None:
        if not bound_s >= 0:
            raise ValueError("the teardown bound must be >= 0 seconds")
        self._gpu_pids, self._bound_s = gpu_pids, bound_s

    def died(self, state: State, holder: Entry, now: float) -> None:
        """``holder`` was found dead: remember it if the driver can say when it is gone."""
        if self._gpu_pids is not None and holder.ticket.owner.host == hostname():
            state.teardown = (holder.ticket.owner.pid, holder.ticket.owner.host, now)

    def blocks(self, state: State, now: float) -> bool:
        """True while the recorded dead holder is still on the GPU (clears it once gone)."""
        if state.teardown is None:
            return False
        pid, host, since = state.teardown
        if self._gpu_pids is None or host != hostname():
            state.teardown = None  # this process cannot tell: the holder's own rules apply
            return False
        try:
            listed = pid in self._gpu_pids()
        except DevicesUnavailable:
            listed = False  # the driver stopped answering: waiting would be unbounded guessing
        if listed and now - since < self._bound_s:
            return True
        if listed:
            logger.warning(
                "GPU lease granted although dead holder pid %d is still listed on the GPU after "
                "%.1fs: its memory may not be free yet",
                pid,
                now - since,
            )
        state.teardown = None
        return False
