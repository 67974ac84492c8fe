"""The in-process scope: grants within one process, a holder and a line of futures."""

from __future__ import annotations

import asyncio
import dataclasses

from .._arbiter import OnGrant, OnLost
from .._queue import QueueEntry, WaiterQueue
from .._tickets import Grant, Queued, Ticket
from ..policies import EXCLUSIVE, Policy

__all__ = ["LocalArbiter"]


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

    def __init__(self, *, aging_s: float | None, policy: Policy = EXCLUSIVE) -> None:
        self.policy = policy
        self._queue: WaiterQueue[_Waiter] = WaiterQueue(aging_s=aging_s)
        self._entries: dict[int, QueueEntry[_Waiter]] = {}
        self._holder: Grant | None = None
        self._on_grant: OnGrant = _ignore_grant

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant callback (an in-process lease is never lost)."""
        self._on_grant = on_grant

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if free and nobody waits."""
        if len(self._queue) or not self.policy.admits(self._holders(), ticket):
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
            if not self.policy.admits(self._holders(), self._queue.peek_next(now).item.ticket):
                return
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

    def _holders(self) -> tuple[Grant, ...]:
        return () if self._holder is None else (self._holder,)

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
