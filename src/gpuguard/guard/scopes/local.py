"""The in-process scope: grants within one process, its holders and a line of futures.

Under the exclusive policy there is at most one holder; under a sharing policy (budget)
several, granted in line order for as long as the policy admits the head of the line.
Given the GPU's name, it bears the machine-wide mark (:mod:`._mark`) from its first grant on
(no other process shares this lease), so any other lease of the same GPU is reported.
"""

from __future__ import annotations

import asyncio

from ..._clock import Clock, SystemClock
from .._arbiter import Joined, OnGrant, OnLost
from .._queue import QueueEntry, WaiterQueue
from .._tickets import Grant, Queued, Ticket
from ..policies import EXCLUSIVE, Policy
from ._mark import GpuMarker

__all__ = ["LocalArbiter"]


class _Waiter:
    __slots__ = ("future", "ticket")

    def __init__(self, ticket: Ticket, future: asyncio.Future[None]) -> None:
        self.ticket = ticket
        self.future = future


class LocalArbiter:
    """Grants within one process: the holders and a :class:`WaiterQueue` of futures."""

    scope = "process"
    decides_locally = True
    issues_fences = False

    def __init__(
        self,
        *,
        aging_s: float | None,
        policy: Policy = EXCLUSIVE,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        self.policy = policy
        self._mark = None if name is None else GpuMarker(name, "the process scope")
        """The GPU's machine-wide mark, from the first grant to :meth:`aclose` (None: unnamed)."""
        self._clock: Clock = clock if clock is not None else SystemClock()
        """The guard's clock: the line's order when a waiter leaves it (aging)."""
        self._queue: WaiterQueue[_Waiter] = WaiterQueue(aging_s=aging_s)
        self._entries: dict[int, QueueEntry[_Waiter]] = {}
        self._holders: dict[int, tuple[Ticket, float]] = {}
        """The tickets that hold now, each with when it was granted, by lease id, oldest first
        (a :class:`Grant` is made only when asked for: not on every hold)."""
        self._hung_since: dict[int, float] = {}
        """Since when each hung holder hangs, by lease id."""
        self._on_grant: OnGrant = _ignore_grant

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant callback (an in-process lease is never lost)."""
        self._on_grant = on_grant

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody waits and the policy admits ``ticket`` beside the holders."""
        if len(self._queue) or not self.policy.admits(self.holders(), ticket):
            return False
        self._hold(ticket, now)
        return True

    async def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """:meth:`try_acquire_now`."""
        return self.try_acquire_now(ticket, now)

    async def enqueue(self, ticket: Ticket, now: float, *, limit: int) -> Joined | None:
        """Grant ``ticket`` at once if it may hold now, else queue it if there is room."""
        if self.try_acquire_now(ticket, now):
            return Joined(None)
        if len(self._queue) >= limit:
            return None
        future = asyncio.get_running_loop().create_future()
        entry = self._queue.push(ticket.lease_id, ticket.priority, now, _Waiter(ticket, future))
        self._entries[ticket.lease_id] = entry
        self._grant_heads(now)  # a sharing policy may admit it at once if it heads the line
        place = self._queue.position(entry, now) if entry.queued else len(self._queue)
        return Joined(future, place, self.holder())

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line (cancelled or timed out); those behind may start if the policy admits."""
        entry = self._entries.pop(ticket.lease_id, None)
        if entry is None or not self._queue.remove(entry):
            return False
        self._grant_heads(self._clock.monotonic())
        return True

    def release(self, ticket: Ticket, now: float) -> None:
        """Give ``ticket``'s grant back; grant waiters in line order while the policy admits."""
        if self._holders.pop(ticket.lease_id, None) is not None:
            self._hung_since.pop(ticket.lease_id, None)
            self._grant_heads(now)
            if not self._holders and self._mark is not None:
                self._mark.linger()  # kept bound: nobody else shares this lease

    def _hold(self, ticket: Ticket, now: float) -> None:
        self._holders[ticket.lease_id] = (ticket, now)
        if self._mark is not None:
            self._mark.take()

    def _grant_heads(self, now: float) -> None:
        """Grant the head of the line, again and again, for as long as the policy admits it."""
        while len(self._queue):
            if not self.policy.admits(self.holders(), self._queue.peek_next(now).item.ticket):
                return
            entry = self._queue.pop_next(now)
            self._entries.pop(entry.ticket, None)
            waiter = entry.item
            if waiter.future.done():
                continue  # its task was cancelled and has not run yet; it cleans up itself
            self._hold(waiter.ticket, now)
            self._on_grant(waiter.ticket, now - entry.enqueued_at)
            waiter.future.set_result(None)

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Record since when the holder hangs."""
        if ticket.lease_id in self._holders:
            self._hung_since[ticket.lease_id] = now

    def holder(self) -> Grant | None:
        """The oldest holder (the only one under the exclusive policy)."""
        for ticket, granted_at in self._holders.values():
            return Grant(ticket, granted_at, self._hung_since.get(ticket.lease_id))
        return None

    def holders(self) -> tuple[Grant, ...]:
        """Every holder, oldest first."""
        hung = self._hung_since
        return tuple(
            Grant(ticket, granted_at, hung.get(ticket.lease_id))
            for ticket, granted_at in self._holders.values()
        )

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
        """Let go of the GPU's mark."""
        if self._mark is not None:
            self._mark.drop()

    def __repr__(self) -> str:
        holders = [ticket.operation for ticket, _ in self._holders.values()]
        return (
            f"<LocalArbiter policy={self.policy.name} holders={holders!r} "
            f"waiting={len(self._queue)}>"
        )


def _ignore_grant(ticket: Ticket, waited_s: float) -> None:
    """The default grant callback, before a guard binds its own."""
