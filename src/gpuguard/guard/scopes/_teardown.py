"""A dead holder's GPU context outlives its lease: wait, bounded, until the driver lets go.

The lease of a holder that died ends before its GPU context does: the kernel drops a killed
process's ``flock`` locks while it tears the process down (the host scope), a Redis grant
lapses when its heartbeat stops (the Redis scope), and the driver frees the context (and its
memory) later in that teardown. Granting the next holder at once would let it load beside
memory that is still taken. Where the driver lists the processes on the GPU (NVML;
:mod:`gpuguard.devices`, handed to a scope as a callable so that the scopes never import
it), both shared scopes record the dead holder and follow :class:`TeardownRule`: the next
holder does not start until the driver no longer lists the dead pid, or until ``bound_s``
has passed since it was found dead (then it starts, and a warning says so). Without such a
list, or for a holder of another host (its pid means nothing to this driver), it starts at
once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Final

from ..._exceptions import DevicesUnavailable
from ._proc import hostname

__all__ = ["POLL_S", "TEARDOWN_S", "GpuPids", "Teardown", "TeardownRule"]

logger = logging.getLogger("gpuguard.guard")

GpuPids = Callable[[], Collection[int]]
"""The pids the driver lists on this GPU now; raises :class:`~gpuguard.DevicesUnavailable`
when it cannot tell."""

Teardown = tuple[int, str, float]
"""A dead holder: its pid, its host, and when it was found dead (the waiting clock's time)."""

POLL_S: Final = 0.05
"""How often the driver is asked again while a dead holder's context is torn down (no
kernel event says "the driver let go")."""

TEARDOWN_S: Final = 5.0
"""The longest the next holder waits for a dead holder's context, by default."""


class TeardownRule:
    """Whether the next holder must still wait for a dead holder's GPU context."""

    def __init__(self, gpu_pids: GpuPids | None, bound_s: float) -> None:
        if not bound_s >= 0:
            raise ValueError("the teardown bound must be >= 0 seconds")
        self._gpu_pids, self._bound_s = gpu_pids, bound_s

    def watches(self, host: str) -> bool:
        """True if this process can tell when a dead holder of ``host`` has left the GPU."""
        return self._gpu_pids is not None and host == hostname()

    def waits(self, dead: Teardown, now: float) -> bool:
        """True while ``dead`` is still listed on the GPU, within the bound.

        False once it is gone, once the driver stops answering (waiting would be unbounded
        guessing), or past the bound (said in a warning); always False for a dead holder this
        process cannot watch.
        """
        pid, host, since = dead
        if self._gpu_pids is None or not self.watches(host):
            return False
        try:
            listed = pid in self._gpu_pids()
        except DevicesUnavailable:
            listed = False
        if listed and now - since < self._bound_s:
            return True
        if listed:
            logger.warning(
                "GPU lease granted although dead holder pid %d is still listed on the GPU after "
                "%.1fs: its memory may not be free yet",
                pid,
                now - since,
            )
        return False
