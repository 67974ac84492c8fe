"""Who holds the GPU and who waits for it: the arbiter, the one part that differs per scope.

A :class:`~gpuguard.GpuGuard` is a front (leases, hold timeouts, hung work, events) over an
arbiter that decides grants. :class:`LocalArbiter` decides within one process; the host-wide
and Redis arbiters decide across processes and hosts with the same rules:

* at most one holder;
* a request is granted at once only when nobody holds *and nobody waits* (no queue jumping);
* on release the next waiter in :class:`~gpuguard._queue.WaiterQueue` order is granted;
* when nobody holds the GPU, nobody waits for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from ._events import Priority
from ._queue import QueueEntry, WaiterQueue

__all__ = ["Arbiter", "Grant", "LocalArbiter", "OnGrant", "OnLost", "Owner", "Queued", "Ticket"]


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


OnGrant = Callable[[Ticket, float], None]
"""Called (in the event loop) when a queued ticket of this process is granted, with its wait."""

OnLost = Callable[[Ticket, str], None]
"""Called (in the event loop) when a granted ticket of this process lost the GPU, with why."""


class Arbiter(Protocol):
    """Decides who holds the GPU; one implementation per scope (process, host, Redis).

    Taking the GPU or a place in the queue is async (a shared scope asks its server); a scope
    that ``decides_locally`` answers :meth:`try_acquire` without waiting on I/O, so the front
    calls :meth:`try_acquire_now` instead, without awaiting. Giving it back (``withdraw``,
    ``release``) is sync and done when it returns: the next waiter is granted in the same
    step, and ``on_grant`` runs then for a waiter of this process. A shared scope makes one
    bounded round trip for it; if its server cannot be told, the server's lease expiry frees
    the GPU.
    """

    @property
    def scope(self) -> str:
        """``process``, ``host`` or ``redis``."""

    @property
    def decides_locally(self) -> bool:
        """True if :meth:`try_acquire` is :meth:`try_acquire_now` (no server to wait for)."""

    @property
    def issues_fences(self) -> bool:
        """True if grants carry a fencing token (:attr:`Grant.fence`); else it is always None."""

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Tell the arbiter whom to call when a ticket of this process is granted or lost."""

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """:meth:`try_acquire` without awaiting (a shared scope: one bounded round trip)."""

    async def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """Grant ``ticket`` at once if nobody holds and nobody waits; else return False."""

    async def enqueue(
        self, ticket: Ticket, now: float, *, limit: int
    ) -> asyncio.Future[None] | None:
        """Queue ``ticket`` if fewer than ``limit`` wait, else return None.

        The future resolves when it is granted (after ``on_grant``).
        """

    def withdraw(self, ticket: Ticket) -> bool:
        """Take a queued ticket out of the line; False if it was granted or gone already.

        A shared scope may learn only now that the ticket was granted: it calls ``on_grant``
        first, then returns False.
        """

    def release(self, ticket: Ticket, now: float) -> None:
        """The holder gives the GPU back; the next waiter is granted."""

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Show the holder as hung (its work is being stopped; the GPU stays quarantined)."""

    def holder(self) -> Grant | None:
        """The current holder, or None."""

    def waiters(self, now: float) -> list[Queued]:
        """Every waiter, in service order."""

    def queue_length(self) -> int:
        """How many tickets wait."""

    async def aclose(self) -> None:
        """Let go of connections and background tasks (a no-op in-process)."""


class _Waiter:
    __slots__ = ("future", "ticket")

    def __init__(self, ticket: Ticket, future: asyncio.Future[None]) -> None:
        self.ticket = ticket
        self.future = future


class LocalArbiter:
    """Grants within one process: a holder and a :class:`WaiterQueue` of futures."""

    scope = "process"
    decides_locally = True
    issues_fences = False

    def __init__(self, *, aging_s: float | None) -> None:
        self._queue: WaiterQueue[_Waiter] = WaiterQueue(aging_s=aging_s)
        self._entries: dict[int, QueueEntry[_Waiter]] = {}
        self._holder: Grant | None = None
        self._on_grant: OnGrant = _ignore_grant

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant callback (an in-process lease is never lost)."""
        self._on_grant = on_grant

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if free and nobody waits."""
        if self._holder is not None or len(self._queue):
            return False
        self._holder = Grant(ticket, now)
        return True

    async def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """:meth:`try_acquire_now`."""
        return self.try_acquire_now(ticket, now)

    async def enqueue(
        self, ticket: Ticket, now: float, *, limit: int
    ) -> asyncio.Future[None] | None:
        """Queue ``ticket`` behind the others, if there is room."""
        if len(self._queue) >= limit:
            return None
        future = asyncio.get_running_loop().create_future()
        entry = self._queue.push(ticket.lease_id, ticket.priority, now, _Waiter(ticket, future))
        self._entries[ticket.lease_id] = entry
        return future

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line (cancelled or timed out while waiting)."""
        entry = self._entries.pop(ticket.lease_id, None)
        return entry is not None and self._queue.remove(entry)

    def release(self, ticket: Ticket, now: float) -> None:
        """Free the GPU and grant the next waiter whose task still wants it."""
        if self._holder is None or self._holder.ticket.lease_id != ticket.lease_id:
            return
        self._holder = None
        while len(self._queue):
            entry = self._queue.pop_next(now)
            self._entries.pop(entry.ticket, None)
            waiter = entry.item
            if waiter.future.done():
                continue  # its task was cancelled and has not run yet; it cleans up itself
            self._holder = Grant(waiter.ticket, now)
            self._on_grant(waiter.ticket, now - entry.enqueued_at)
            waiter.future.set_result(None)
            return

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Record since when the holder hangs."""
        if self._holder is not None and self._holder.ticket.lease_id == ticket.lease_id:
            self._holder = dataclasses.replace(self._holder, hung_since=now)

    def holder(self) -> Grant | None:
        """The holder."""
        return self._holder

    def waiters(self, now: float) -> list[Queued]:
        """The line in service order."""
        return [
            Queued(e.item.ticket, e.enqueued_at, self._queue.effective_priority(e, now))
            for e in self._queue.order(now)
        ]

    def queue_length(self) -> int:
        """How many wait."""
        return len(self._queue)

    async def aclose(self) -> None:
        """Nothing to let go of."""

    def __repr__(self) -> str:
        holder = None if self._holder is None else self._holder.ticket.operation
        return f"<LocalArbiter holder={holder!r} waiting={len(self._queue)}>"


def _ignore_grant(ticket: Ticket, waited_s: float) -> None:
    """The default grant callback, before a guard binds its own."""


def _process_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
