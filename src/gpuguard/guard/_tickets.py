"""What an arbiter records: requests (:class:`Ticket`), their processes, grants and waiters.

The vocabulary every scope and the front share; pure data, no behaviour.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from functools import cache

from .._events import Priority

__all__ = ["Grant", "Owner", "Queued", "Ticket"]


@dataclass(frozen=True, slots=True)
class Owner:
    """The process a ticket comes from: shown in snapshots and "Waiting for GPU..." notices."""

    pid: int
    host: str
    process: str

    @staticmethod
    @cache
    def this_process() -> Owner:
        """The current process."""
        return Owner(os.getpid(), socket.gethostname(), _process_name())


@dataclass(frozen=True, slots=True)
class Ticket:
    """One request for the GPU, as the arbiter records it."""

    lease_id: int
    operation: str
    model: str | None
    priority: Priority
    owner: Owner
    memory_bytes: int | None = None
    """The GPU memory the operation declares it needs (``None``: the policy's own figure)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """The current holder: its ticket, when it was granted, and since when it hangs (if so)."""

    ticket: Ticket
    granted_at: float
    hung_since: float | None = None
    fence: int | None = None
    """The fencing token of this grant, on scopes that issue them (Redis)."""


@dataclass(frozen=True, slots=True)
class Queued:
    """A waiter, as listed in service order."""

    ticket: Ticket
    enqueued_at: float
    effective_priority: Priority


def _process_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
