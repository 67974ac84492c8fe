"""What other processes can tell about a holder its own timers cannot: overdue, stopped, gone.

A holder's hold timer runs in its own process; stopped (SIGSTOP, a debugger) or frozen, it
never fires, and the holder would hold without bound. Every other process sees its grant
time and hold timeout in the shared state, and where the holder runs on this host, the
kernel's word on whether it is stopped (``/proc/<pid>/stat``) or gone: a holder whose entry
is still locked although its process has ended is held by the programs it started, which
inherited the lock (``gpuguard run``).
"""

from __future__ import annotations

import os

from .._proc import hostname, process_state
from ._state import Entry

__all__ = ["GRACE_S", "overdue_since", "owner_gone"]

GRACE_S = 1.0
"""How long past its deadline a running holder is given to notice by itself (its grant is
stamped a moment before its own timer starts)."""

_STOPPED = frozenset("Tt")  # stopped by a signal; stopped by a tracer
_ENDED = frozenset({None, "Z", "X"})  # no such process; a zombie; dead


def overdue_since(entry: Entry, granted_at: float, now: float) -> float | None:
    """Since when a holder in another process is past its deadline and hung; else None.

    A stopped holder is hung from its deadline on; a running one once ``GRACE_S`` has passed
    and it has still not marked itself hung.
    """
    hold_s = entry.hold_timeout_s
    owner = entry.ticket.owner
    if hold_s is None or owner.pid == os.getpid():
        return None
    deadline = granted_at + hold_s
    if now < deadline:
        return None
    if now >= deadline + GRACE_S or process_state(owner.pid, owner.host) in _STOPPED:
        return deadline
    return None


def owner_gone(entry: Entry) -> bool:
    """Whether the process of a live (still locked) holder of this host has ended."""
    owner = entry.ticket.owner
    if owner.pid == os.getpid() or owner.host != hostname():
        return False
    return process_state(owner.pid) in _ENDED
