"""The Redis scope's arbiter: this process's tickets, decided on Redis's answers (see .redis)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from redis.exceptions import RedisError

from ...._clock import Clock
from ...._exceptions import GuardUnavailable
from ..._arbiter import Joined
from ..._tickets import Grant, Queued, Ticket
from ...policies import EXCLUSIVE, Policy
from .._teardown import TEARDOWN_S, GpuPids
from ._core import LeaseCore
from ._link import RedisLink
from ._pending import told_too_late
from ._view import Mine

__all__ = ["RedisArbiter"]


class RedisArbiter(LeaseCore):
    """Grants one GPU across hosts through Redis (see the module docstring).

    Args:
        client: a redis-py asyncio client: takes, heartbeats and pushed grants.
        sync_client: a redis-py client to the same Redis, with a short socket timeout:
            give-backs and ``acquire_nowait``, which must land before they return.
        name: the GPU's name; guards with the same ``name`` and ``prefix`` (the keys'
            prefix in Redis) share one lease; under the exclusive policy a holder bears the
            GPU's mark (``.._mark``; a sharing policy's holders in several processes of this
            host would meet on it).
        aging_s: as for :class:`~gpuguard.GpuGuard` (use the same value on every host).
        ttl_s: the grant's time to live; a dead holder frees the GPU within it.
        gpu_pids: the pids the GPU's driver lists on it now: a waiter granted after a holder
            of this host died starts once the driver no longer lists it, or ``teardown_s``
            after its grant lapsed (:mod:`._teardown`); without it, at once.
        policy: who may hold at once (:mod:`gpuguard.guard.policies`): the budget's ledger
            is kept in Redis (:mod:`._sharing`); use the same policy on every host.
        clock: this process's clock, for the times shown in snapshots; ``queue_clock``
            orders the queue by it instead of Redis ``TIME`` (one-process tests only).
    """

    decides_locally = False  # taking the GPU is a round trip to Redis, awaited
    issues_fences = True

    @classmethod
    def from_url(
        cls,
        url: str,
        name: str = "gpu0",
        *,
        aging_s: float | None = 30.0,
        ttl_s: float = 2.0,
        prefix: str = "gpuguard",
        clock: Clock | None = None,
        policy: Policy = EXCLUSIVE,
        gpu_pids: GpuPids | None = None,
        teardown_s: float = TEARDOWN_S,
    ) -> RedisArbiter:
        """Connect to the Redis at ``url`` (``redis://host:6379/0``; see ``RedisLink.clients``)."""
        client, sync_client = RedisLink.clients(url, ttl_s)
        return cls(
            client,
            sync_client,
            name,
            aging_s=aging_s,
            ttl_s=ttl_s,
            prefix=prefix,
            clock=clock,
            policy=policy,
            gpu_pids=gpu_pids,
            teardown_s=teardown_s,
        )

    # --- taking the GPU (Redis decides) ----------------------------------------------------

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody waits and the policy admits it: one synchronous round trip.

        None while this process has a request on its way, or holds grants the policy does
        not admit it beside; others' state may be stale here (hand-offs go to the next waiter
        only), so Redis is asked. Raises :class:`~gpuguard.GuardUnavailable` if Redis does
        not answer in time.
        """
        held = [m.grant for _, m in self._view.holding() if m.grant is not None]
        if self._view.asking() or (held and not self.policy.admits(held, ticket)):
            return False
        self._start_tasks()
        tid, mine = self._track(ticket, now)
        try:
            state = self._call_now("acquire", tid, mine.json, "0")
        except RedisError as exc:
            self._view.mine.pop(tid, None)
            raise self._unavailable(ticket, exc) from exc
        if state["r"] != "granted" or not self._granted(tid, mine, state, waited_s=0.0):
            self._view.mine.pop(tid, None)
            return False
        return True

    async def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody holds and nobody waits."""
        return await self._request("acquire", ticket, now, limit=0) is not None

    async def enqueue(self, ticket: Ticket, now: float, *, limit: int) -> Joined | None:
        """Take the GPU at once or join the line, in one script call; None if ``limit`` wait."""
        return await self._request("enqueue", ticket, now, limit=limit)

    async def _request(self, op: str, ticket: Ticket, now: float, *, limit: int) -> Joined | None:
        with self._pending.request():
            return await self._ask(op, ticket, now, limit=limit)

    async def _ask(self, op: str, ticket: Ticket, now: float, *, limit: int) -> Joined | None:
        # Tracked (and counted in the line) from the start: its grant may be published at
        # once, and a later request of this process must see it ahead of itself.
        tid, mine = self._track(ticket, now)
        mine.waits = op == "enqueue"
        call = asyncio.ensure_future(self._send(op, tid, mine, str(limit)))
        mine.asking = asyncio.shield(call)
        try:
            state = await mine.asking
        except asyncio.CancelledError:
            # Its task gave up while Redis decides: never grant it here (a release drops it
            # from the line), and give back whatever Redis grants or queues for it.
            mine.future.cancel()
            call.add_done_callback(lambda _: self._abandoned(tid, mine))
            raise
        except GuardUnavailable:
            self._view.mine.pop(tid, None)
            raise
        except RedisError as exc:
            self._view.mine.pop(tid, None)
            raise self._unavailable(ticket, exc) from exc
        result = state["r"]
        if result == "granted" and self._granted(tid, mine, state, waited_s=0.0):
            return self._joined(mine, now)
        requeued = result == "granted" and mine.waits and self._view.mine.get(tid) is mine
        if result == "queued" or requeued:  # the policy here sent it back to the line
            mine.version = max(mine.version, state["v"])
            self._confirm(state["sent"] + self.ttl_s)
            return self._joined(mine, now)
        self._view.mine.pop(tid, None)
        return None

    def _joined(self, mine: Mine, now: float) -> Joined:
        """What the answer to ``mine``'s request says: granted at once, or its place in line."""
        future = mine.future
        if future.done() and not future.cancelled() and future.exception() is None:
            return Joined(None)  # reported held (a dead holder's teardown would hold it back)
        line = self._view.waiters(now)
        place = (i for i, queued in enumerate(line, 1) if queued.ticket == mine.ticket)
        return Joined(future, next(place, self._view.queue_length()), self._view.holder())

    async def _send(self, op: str, tid: str, mine: Mine, limit: str) -> dict[str, Any]:
        await self._start(mine.ticket)
        return self._answer(await self._link.call(op, tid, mine.json, limit), asked=tid)

    # --- giving it back (one synchronous round trip) -----------------------------------------

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line; False if the ticket was granted (then ``on_grant`` ran) or gone."""
        tid = self._ids.get(ticket.lease_id)
        mine = self._view.mine.get(tid) if tid is not None else None
        if tid is None or mine is None:
            self._ids.pop(ticket.lease_id, None)
            return False
        if mine.fence is not None:
            if not self._held_back.cancel(tid):
                return False
            # Granted, and held back for a dead holder's GPU teardown: hand it on instead.
            self.release(ticket, self._clock.monotonic())
            return True
        mine.leaving = True
        try:
            state = self._call_now("withdraw", tid, "", "")
        except RedisError as exc:
            told_too_late(exc)  # if Redis grants it later, the listener gives it back
        else:
            if state["r"] == "granted":  # by another's release, and not yet heard here
                waited = self._clock.monotonic() - mine.requested_at
                if self._granted(tid, mine, state, waited_s=waited, notify=True):
                    return False
                self._give_back("drop", tid, "")  # sent back to the line: leave it
        self._view.mine.pop(tid, None)
        self._ids.pop(ticket.lease_id, None)
        return True

    def release(self, ticket: Ticket, now: float) -> None:
        """Free the GPU; Redis grants the next waiter (here at once if it is this process's).

        Waiters of this process whose task was cancelled before it could leave the line
        are dropped in the same step, so the GPU is never granted to them.
        """
        tid = self._ids.pop(ticket.lease_id, None)
        mine = self._view.mine.pop(tid, None) if tid is not None else None
        if tid is None or mine is None or mine.fence is None:
            return
        cancelled = [t for t, m in self._view.mine.items() if m.fence is None and m.gave_up]
        for gone in cancelled:
            del self._view.mine[gone]
        if self._mark is not None:
            self._mark.drop()  # before Redis can grant it to another process of this host
        self._give_back("release", tid, mine.fence, " ".join(cancelled))

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Show the grant as hung, here at once and in Redis for every host."""
        tid = self._ids.get(ticket.lease_id)
        mine = self._view.mine.get(tid) if tid is not None else None
        if tid is not None and mine is not None and mine.grant is not None:
            mine.grant = dataclasses.replace(mine.grant, hung_since=now)
            self._pending.spawn(self._call("hung", tid, "", ""))

    # --- what is known here (:class:`~._view.LeaseView`) -------------------------------------

    def holder(self) -> Grant | None:
        """The oldest grant (the only one under the exclusive policy), as known here."""
        return self._view.holder()

    def holders(self) -> tuple[Grant, ...]:
        """Every grant, oldest first: this process's own, and the others Redis last reported."""
        return self._view.holders()

    def waiters(self, now: float) -> list[Queued]:
        """Every waiter in service order, as far as this process knows."""
        return self._view.waiters(now)

    def queue_length(self) -> int:
        """How many wait, as Redis last reported, and this process's requests in flight."""
        return self._view.queue_length()

    async def settle(self) -> None:
        """Wait until Redis has heard every give-back and this view caught up (tests, bench)."""
        await self._listener.settle(self._pending)

    async def aclose(self) -> None:
        """Stop listening and beating, tell Redis what is still pending, close the client."""
        self._pending.closed = True
        self._held_back.close()
        await self._listener.stop()
        await self._heartbeat.stop()
        await self._pending.drain(requests=False)
        await self._link.aclose()

    def __repr__(self) -> str:
        return f"<RedisArbiter {self.key!r} mine={len(self._view.mine)}>"
