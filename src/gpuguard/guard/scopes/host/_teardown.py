"""The host lease's side of a dead holder's GPU teardown (the rule: :mod:`.._teardown`).

The first process to find the holder dead records it in the shared state (``teardown``), and
no decision grants anybody while :class:`~.._teardown.TeardownRule` says the next holder must
still wait; the record is cleared once the wait is over.
"""

from __future__ import annotations

from .._teardown import POLL_S, GpuPids, TeardownRule
from ._state import Entry, State

__all__ = ["POLL_S", "GpuPids", "TeardownWait"]


class TeardownWait:
    """Holds grants back while a dead holder of this host is still listed on the GPU."""

    def __init__(self, gpu_pids: GpuPids | None, bound_s: float) -> None:
        self._rule = TeardownRule(gpu_pids, bound_s)

    def died(self, state: State, holder: Entry, now: float) -> None:
        """``holder`` was found dead: remember it if the driver can say when it is gone."""
        owner = holder.ticket.owner
        if self._rule.watches(owner.host):
            state.teardown = (owner.pid, owner.host, now)

    def blocks(self, state: State, now: float) -> bool:
        """True while the recorded dead holder is still on the GPU (clears it once gone)."""
        if state.teardown is None:
            return False
        if self._rule.waits(state.teardown, now):
            return True
        state.teardown = None  # gone, past the bound, or beyond what this process can tell
        return False
