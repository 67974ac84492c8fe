"""What an arbiter records: requests (:class:`Ticket`), their processes, grants and waiters.

The vocabulary every scope and the front share; pure data, no behaviour.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._events import Priority

__all__ = ["GpuBudget", "Grant", "Owner", "Queued", "Ticket"]


@dataclass(frozen=True, slots=True)
class Owner:
    """The process a ticket comes from: shown in snapshots and "Waiting for GPU..." notices."""

    pid: int
    host: str
    process: str

    @staticmethod
    def this_process() -> Owner:
        """The current process (a child of ``fork()`` is itself, not its parent)."""
        global _this_process
        if _this_process is None:
            _this_process = Owner(os.getpid(), socket.gethostname(), _process_name())
        return _this_process


_this_process: Owner | None = None
"""This process's :class:`Owner` once asked for (it is read on every request)."""


def _forget_this_process() -> None:
    """In a child of ``fork()``: the parent's owner is not the child's."""
    global _this_process
    _this_process = None


os.register_at_fork(after_in_child=_forget_this_process)

_set = object.__setattr__


@dataclass(frozen=True, init=False)
class Ticket:
    """One request for the GPU, as the arbiter records it."""

    lease_id: int
    operation: str
    model: str | None
    priority: Priority
    owner: Owner
    memory_bytes: int | None = None
    """The GPU memory the operation declares it needs (``None``: the policy's own figure)."""
    hold_timeout_s: float | None = field(default=None, compare=False)
    """How long it may hold once granted (None: no limit): shared scopes show a holder
    past it as hung to other processes, whose own timers cannot see it."""

    def __init__(
        self,
        lease_id: int,
        operation: str,
        model: str | None,
        priority: Priority,
        owner: Owner,
        memory_bytes: int | None = None,
        hold_timeout_s: float | None = None,
    ) -> None:
        # One store of the instance's dict, not a frozen field's ``__setattr__`` per field:
        # a ticket is made on every request.
        _set(
            self,
            "__dict__",
            {
                "lease_id": lease_id,
                "operation": operation,
                "model": model,
                "priority": priority,
                "owner": owner,
                "memory_bytes": memory_bytes,
                "hold_timeout_s": hold_timeout_s,
            },
        )


@dataclass(frozen=True, init=False)
class Grant:
    """The current holder: its ticket, when it was granted, and since when it hangs (if so)."""

    ticket: Ticket
    granted_at: float
    hung_since: float | None = None
    fence: int | None = None
    """The fencing token of this grant, on scopes that issue them (Redis)."""
    owner_gone: bool = False
    """True when the process that was granted has ended but the programs it started keep
    the lease (host scope: they inherited its kernel lock, as under ``gpuguard run``)."""
    fence_floor: int | None = None
    """The oldest token still holding when it was granted (under the exclusive policy, its
    own): work under an older token was taken over (:class:`~gpuguard.guard.FenceBook`)."""

    def __init__(
        self,
        ticket: Ticket,
        granted_at: float,
        hung_since: float | None = None,
        fence: int | None = None,
        owner_gone: bool = False,
        fence_floor: int | None = None,
    ) -> None:
        # As Ticket's: a grant is made on every hold.
        _set(
            self,
            "__dict__",
            {
                "ticket": ticket,
                "granted_at": granted_at,
                "hung_since": hung_since,
                "fence": fence,
                "owner_gone": owner_gone,
                "fence_floor": fence_floor,
            },
        )


@dataclass(frozen=True, slots=True)
class Queued:
    """A waiter, as listed in service order."""

    ticket: Ticket
    enqueued_at: float
    effective_priority: Priority


def _process_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


@dataclass(frozen=True, slots=True)
class GpuBudget:
    """A GPU's memory as a sharing policy counts it at one instant (bytes).

    ``committed_bytes`` is what the holders take or were promised plus what everyone else
    uses, resident models included; ``budget_bytes`` what the policy hands out at most (the
    GPU less the headroom); ``resident`` the models kept loaded, each with its footprint
    (``None``: not known).
    """

    total_bytes: int
    free_bytes: int
    headroom_bytes: int
    committed_bytes: int
    resident: Mapping[str, int | None] = field(default_factory=dict)

    @property
    def budget_bytes(self) -> int:
        """The memory the policy shares: the GPU's, less the headroom."""
        return self.total_bytes - self.headroom_bytes

    @property
    def resident_bytes(self) -> int:
        """The known bytes of the resident models."""
        return sum(size or 0 for size in self.resident.values())

    @property
    def available_bytes(self) -> int:
        """What is left of the budget beside what is committed (negative: over it)."""
        return self.budget_bytes - self.committed_bytes

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "headroom_bytes": self.headroom_bytes,
            "budget_bytes": self.budget_bytes,
            "committed_bytes": self.committed_bytes,
            "resident_bytes": self.resident_bytes,
            "resident": dict(self.resident),
        }
