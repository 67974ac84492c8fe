"""Frozen views of a guard's state: what the HTTP status route and the CLI render.

Also how they are read off the arbiter's records (:func:`holder_info`, :func:`waiter_infos`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .._events import Priority
from ._tickets import GpuBudget, Grant, Queued

__all__ = [
    "GuardCounters",
    "GuardSnapshot",
    "HolderInfo",
    "WaiterInfo",
    "holder_info",
    "waiter_infos",
]


@dataclass(frozen=True, slots=True)
class HolderInfo:
    """The operation holding the GPU.

    ``hung_s`` is set while the holder is hung: past its hold timeout, its work being
    stopped, the GPU quarantined until that work really ends. ``pid``, ``host`` and
    ``process`` name where it runs (a host-wide or Redis guard spans processes).
    ``memory_bytes`` is the GPU memory the policy counts for it (``None``: unknown).
    ``owner_gone`` is True when that process has ended but the programs it started still
    hold the lease (host scope, ``gpuguard run``).
    """

    lease_id: int
    operation: str
    model: str | None
    priority: Priority
    since: float
    held_s: float
    hung_s: float | None = None
    pid: int | None = None
    host: str | None = None
    process: str | None = None
    memory_bytes: int | None = None
    owner_gone: bool = False

    @property
    def hung(self) -> bool:
        """True while the holder is hung and its work is being stopped."""
        return self.hung_s is not None

    @property
    def label(self) -> str:
        """How waiters name it: ``chat``, ``chat (hung for 12s)``, ``train (pid 4242)``.

        The pid is named when the holder runs in another process (a host-wide or Redis lease),
        and said to be gone when only the programs it started still hold.
        """
        notes = [] if self.hung_s is None else [f"hung for {self.hung_s:.0f}s"]
        if self.pid is not None and self.pid != os.getpid():
            notes.append(self.where)
        return f"{self.operation} ({', '.join(notes)})" if notes else self.operation

    @property
    def where(self) -> str:
        """``pid 4242``, or ``pid 4242 gone; its programs still hold the GPU``."""
        gone = " gone; its programs still hold the GPU" if self.owner_gone else ""
        return f"pid {self.pid}{gone}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**asdict(self), "priority": str(self.priority), "hung": self.hung}


@dataclass(frozen=True, slots=True)
class WaiterInfo:
    """One queued operation.

    ``position`` 1 is served next; ``effective_priority`` includes aging.
    """

    lease_id: int
    operation: str
    model: str | None
    priority: Priority
    effective_priority: Priority
    position: int
    since: float
    waited_s: float
    pid: int | None = None
    host: str | None = None
    process: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            **asdict(self),
            "priority": str(self.priority),
            "effective_priority": str(self.effective_priority),
        }


@dataclass(frozen=True, slots=True)
class GuardCounters:
    """Totals since the guard was created.

    Every granted lease ends exactly one way, so once the GPU is free
    ``acquired == completed + failed + cancelled + hung`` (while it is held, one more).
    ``hung`` counts holders that outlived their hold timeout; ``total_hold_s`` includes a hung
    holder's time once its work has really ended.
    Every request that never got the GPU is counted once in ``timed_out``, ``rejected``
    (queue full) or ``abandoned`` (cancelled while queued). ``waited`` counts the grants that
    queued first; ``total_wait_s`` sums their waits and ``total_hold_s`` every finished hold.
    """

    acquired: int = 0
    waited: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    hung: int = 0
    rejected: int = 0
    total_wait_s: float = 0.0
    total_hold_s: float = 0.0
    abandoned: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GuardSnapshot:
    """A guard's state at one instant.

    ``holder`` is the oldest holder (as before sharing policies); ``holders`` every one,
    oldest first; ``memory`` the GPU's memory, budget and free bytes as the policy counts
    them (``None`` under the exclusive policy, or while the GPU cannot be read).
    """

    guard: str
    policy: str
    scope: str
    holder: HolderInfo | None
    waiters: tuple[WaiterInfo, ...]
    counters: GuardCounters
    max_waiters: int
    dropped_events: int = 0
    taken_at: float = field(default=0.0)
    holders: tuple[HolderInfo, ...] = ()
    memory: GpuBudget | None = None

    @property
    def queue_length(self) -> int:
        """How many operations are waiting."""
        return len(self.waiters)

    @property
    def waiters_by_priority(self) -> dict[Priority, tuple[WaiterInfo, ...]]:
        """The waiters grouped by their declared priority, highest first, each in queue order."""
        return {
            priority: tuple(w for w in self.waiters if w.priority is priority)
            for priority in sorted(Priority, reverse=True)
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, as served by ``GET /admin/gpu``."""
        return {
            "guard": self.guard,
            "policy": self.policy,
            "scope": self.scope,
            "holder": None if self.holder is None else self.holder.to_dict(),
            "waiters": [w.to_dict() for w in self.waiters],
            "waiters_by_priority": {
                str(p): [w.lease_id for w in ws] for p, ws in self.waiters_by_priority.items()
            },
            "queue_length": self.queue_length,
            "max_waiters": self.max_waiters,
            "counters": self.counters.to_dict(),
            "dropped_events": self.dropped_events,
            "taken_at": self.taken_at,
            "holders": [h.to_dict() for h in self.holders],
            "memory": None if self.memory is None else self.memory.to_dict(),
        }


def holder_info(grant: Grant, now: float, memory_bytes: int | None = None) -> HolderInfo:
    """The arbiter's ``grant``, as seen at ``now``, counted as ``memory_bytes``."""
    ticket = grant.ticket
    return HolderInfo(
        lease_id=ticket.lease_id,
        operation=ticket.operation,
        model=ticket.model,
        priority=ticket.priority,
        since=grant.granted_at,
        held_s=now - grant.granted_at,
        hung_s=None if grant.hung_since is None else now - grant.hung_since,
        pid=ticket.owner.pid,
        host=ticket.owner.host,
        process=ticket.owner.process,
        memory_bytes=memory_bytes,
        owner_gone=grant.owner_gone,
    )


def waiter_infos(waiters: list[Queued], now: float) -> tuple[WaiterInfo, ...]:
    """The arbiter's ``waiters`` (in service order), as seen at ``now``."""
    return tuple(
        WaiterInfo(
            lease_id=queued.ticket.lease_id,
            operation=queued.ticket.operation,
            model=queued.ticket.model,
            priority=queued.ticket.priority,
            effective_priority=queued.effective_priority,
            position=position,
            since=queued.enqueued_at,
            waited_s=now - queued.enqueued_at,
            pid=queued.ticket.owner.pid,
            host=queued.ticket.owner.host,
            process=queued.ticket.owner.process,
        )
        for position, queued in enumerate(waiters, start=1)
    )
