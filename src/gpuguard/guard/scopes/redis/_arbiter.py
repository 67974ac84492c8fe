"""The Redis scope's arbiter: this process's tickets, decided on Redis's answers (see .redis)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ...._clock import Clock, SystemClock
from ...._exceptions import GuardUnavailable
from ..._arbiter import OnGrant, OnLost
from ..._tickets import Grant, Queued, Ticket
from ...policies import EXCLUSIVE
from .._mark import GpuMarker
from ._heartbeat import Heartbeat
from ._link import RedisLink
from ._listener import GrantListener
from ._mirror import ticket_json
from ._pending import PendingCalls, told_too_late
from ._view import PLACE_GONE, LeaseView, Mine

__all__ = ["RedisArbiter"]


class RedisArbiter:
    """Grants one GPU across hosts through Redis (see the module docstring).

    Args:
        client: a redis-py asyncio client: takes, heartbeats and pushed grants.
        sync_client: a redis-py client to the same Redis, with a short socket timeout:
            give-backs and ``acquire_nowait``, which must land before they return.
        name: the GPU's name; guards with the same ``name`` and ``prefix`` (the keys'
            prefix in Redis) share one lease; a holder bears the GPU's mark (``.._mark``).
        aging_s: as for :class:`~gpuguard.GpuGuard` (use the same value on every host).
        ttl_s: the grant's time to live; a dead holder frees the GPU within it.
        clock: this process's clock, for the times shown in snapshots; ``queue_clock``
            orders the queue by it instead of Redis ``TIME`` (one-process tests only).
    """

    scope = "redis"
    decides_locally = False  # taking the GPU is a round trip to Redis, awaited
    issues_fences = True
    policy = EXCLUSIVE  # the Lua script grants one holder

    def __init__(
        self,
        client: aioredis.Redis[bytes],
        sync_client: redis.Redis[bytes],
        name: str = "gpu0",
        *,
        aging_s: float | None = 30.0,
        ttl_s: float = 2.0,
        prefix: str = "gpuguard",
        clock: Clock | None = None,
        queue_clock: Clock | None = None,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError("ttl_s must be > 0")
        self.key = f"{prefix}:{{{name}}}"
        self.ttl_s = ttl_s
        self.heartbeat_s = ttl_s / 5
        self.fence_margin_s = ttl_s / 4
        self._client_id = uuid.uuid4().hex[:12]
        self._link = RedisLink(
            client,
            sync_client,
            self.key,
            client_id=self._client_id,
            mine=lambda: self._view.mine.keys(),
            aging_s=aging_s,
            beat_timeout_s=self.fence_margin_s,
            queue_clock=queue_clock,
        )
        self._clock = clock if clock is not None else SystemClock()
        self._mark = GpuMarker(name, f"the Redis lease {self.key}")  # while a grant here holds
        self._ids: dict[int, str] = {}
        self._view = LeaseView(self._client_id, aging_s)
        self._pending = PendingCalls()
        self._listener = GrantListener(self._link, on_change=self._look)
        ttl_ms = str(int(ttl_s * 1000))
        self._heartbeat = Heartbeat(
            self._view.mine.copy,
            functools.partial(self._link.beat, client_id=self._client_id, ttl_ms=ttl_ms),
            ttl_s=ttl_s,
            every_s=self.heartbeat_s,
            margin_s=self.fence_margin_s,
        )
        self._on_grant: OnGrant = _ignore
        self._on_lost: OnLost = _ignore

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
    ) -> RedisArbiter:
        """Connect to the Redis at ``url`` (``redis://host:6379/0``; see ``RedisLink.clients``)."""
        client, sync_client = RedisLink.clients(url, ttl_s)
        return cls(
            client, sync_client, name, aging_s=aging_s, ttl_s=ttl_s, prefix=prefix, clock=clock
        )

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant and loss callbacks."""
        self._on_grant, self._on_lost = on_grant, on_lost

    # --- taking the GPU (Redis decides) ----------------------------------------------------

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody holds and nobody waits: one synchronous round trip.

        None while this process holds or has a request on its way; others' state may be
        stale here (hand-offs go to the next waiter only), so Redis is asked. Raises
        :class:`~gpuguard.GuardUnavailable` if Redis does not answer in time.
        """
        if self._view.holding() is not None or self._view.asking():
            return False
        self._start_tasks()
        tid, mine = self._track(ticket, now)
        try:
            state = self._call_now("acquire", tid, mine.json, "0")
        except RedisError as exc:
            self._view.mine.pop(tid, None)
            raise self._unavailable(ticket, exc) from exc
        if state["r"] != "granted":
            self._view.mine.pop(tid, None)
            return False
        self._granted(tid, mine, state, waited_s=0.0, notify=False)
        return True

    async def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody holds and nobody waits."""
        return await self._request("acquire", ticket, now, limit=0) is not None

    async def enqueue(
        self, ticket: Ticket, now: float, *, limit: int
    ) -> asyncio.Future[None] | None:
        """Join the line (or take the GPU, if it freed meanwhile); None if ``limit`` wait."""
        return await self._request("enqueue", ticket, now, limit=limit)

    async def _request(
        self, op: str, ticket: Ticket, now: float, *, limit: int
    ) -> asyncio.Future[None] | None:
        with self._pending.request():
            return await self._ask(op, ticket, now, limit=limit)

    async def _ask(
        self, op: str, ticket: Ticket, now: float, *, limit: int
    ) -> asyncio.Future[None] | None:
        # Tracked (and counted in the line) from the start: its grant may be published at
        # once, and a later request of this process must see it ahead of itself.
        tid, mine = self._track(ticket, now)
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
        if result == "granted":
            self._granted(tid, mine, state, waited_s=0.0, notify=op == "enqueue")
            return mine.future
        if result == "queued":
            mine.version = state["v"]
            self._heartbeat.confirm(state["sent"] + self.ttl_s)
            return mine.future
        self._view.mine.pop(tid, None)
        return None

    async def _send(self, op: str, tid: str, mine: Mine, limit: str) -> dict[str, Any]:
        await self._start(mine.ticket)
        return await self._call(op, tid, mine.json, limit)

    def _track(self, ticket: Ticket, now: float) -> tuple[str, Mine]:
        """Start keeping ``ticket`` as one of this process's: its Redis id and its record."""
        tid = self._ids.setdefault(ticket.lease_id, f"{self._client_id}:{ticket.lease_id}")
        future = asyncio.get_running_loop().create_future()
        tk = ticket_json(ticket, self._client_id, self.ttl_s)
        mine = self._view.mine[tid] = Mine(ticket, tk, now, future)
        self._heartbeat.poke()
        return tid, mine

    def _abandoned(self, tid: str, mine: Mine) -> None:
        """Redis answered a request whose task was cancelled meanwhile: undo what it did."""
        if self._view.mine.get(tid) is mine:
            del self._view.mine[tid]
        self._give_back("drop", tid, "")

    def _granted(
        self, tid: str, mine: Mine, state: dict[str, Any], *, waited_s: float, notify: bool
    ) -> None:
        """Redis's answer ``state`` names ``mine`` as the holder: take the grant here."""
        if mine.fence is not None:
            return  # both a request's answer and a later read say so; the first one counts
        fence, mine.version = state["h"]["f"], state["v"]
        if mine.gave_up:
            # Its task gave up before the grant reached this process: hand the GPU on.
            if self._view.mine.get(tid) is mine:
                del self._view.mine[tid]
            self._give_back("release", tid, fence)
            return
        mine.fence = fence
        self._mark.take()
        mine.grant = Grant(mine.ticket, self._clock.monotonic(), fence=int(fence))
        self._heartbeat.confirm(state["sent"] + max(0, state["pttl"]) / 1000.0)
        if notify:
            self._on_grant(mine.ticket, waited_s)
        if not mine.future.done():
            mine.future.set_result(None)

    def _reconcile(self, state: dict[str, Any]) -> None:
        """Hold this process's tickets to what Redis says (:meth:`LeaseView.verdicts`)."""
        verdicts = self._view.verdicts(state)
        for tid, mine in verdicts.granted:
            waited = self._clock.monotonic() - mine.requested_at
            self._granted(tid, mine, state, waited_s=waited, notify=True)
        for tid, reason in verdicts.lost:
            self._lose(tid, reason)
        for tid, mine in verdicts.gone:
            self._drop_waiter(tid, mine, PLACE_GONE)
        if verdicts.unwanted is not None:
            self._pending.spawn(self._call("release", *verdicts.unwanted, ""))

    # --- giving it back (one synchronous round trip) -----------------------------------------

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line; False if the ticket was granted (then ``on_grant`` ran) or gone."""
        tid = self._ids.get(ticket.lease_id)
        mine = self._view.mine.get(tid) if tid is not None else None
        if tid is None or mine is None:
            self._ids.pop(ticket.lease_id, None)
            return False
        if mine.fence is not None:
            return False
        mine.leaving = True
        try:
            state = self._call_now("withdraw", tid, "", "")
        except RedisError as exc:
            told_too_late(exc)  # if Redis grants it later, the listener gives it back
        else:
            if state["r"] == "granted":  # by another's release, and not yet heard here
                waited = self._clock.monotonic() - mine.requested_at
                self._granted(tid, mine, state, waited_s=waited, notify=True)
                if mine.fence is not None:
                    return False
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
        self._mark.drop()  # before Redis can grant it to another process of this host
        self._give_back("release", tid, mine.fence, " ".join(cancelled))

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Show the grant as hung, here at once and in Redis for every host."""
        tid = self._ids.get(ticket.lease_id)
        mine = self._view.mine.get(tid) if tid is not None else None
        if tid is not None and mine is not None and mine.grant is not None:
            mine.grant = Grant(ticket, mine.grant.granted_at, now, mine.grant.fence)
            self._pending.spawn(self._call("hung", tid, "", ""))

    def _give_back(self, op: str, tid: str, arg: str, extra: str = "") -> None:
        """Tell Redis now; a grant it makes to a waiter of this process is taken at once."""
        try:
            self._call_now(op, tid, arg, extra)
        except RedisError as exc:
            told_too_late(exc)

    # --- what is known here (:class:`~._view.LeaseView`) -------------------------------------

    def holder(self) -> Grant | None:
        """The grant of this process, else the holder Redis last reported."""
        return self._view.holder()

    def waiters(self, now: float) -> list[Queued]:
        """Every waiter in service order, as far as this process knows."""
        return self._view.waiters(now)

    def queue_length(self) -> int:
        """How many wait, as Redis last reported, and this process's requests in flight."""
        return self._view.queue_length()

    async def settle(self) -> None:
        """Wait until Redis has heard every give-back and this view caught up (tests, bench)."""
        await self._listener.settle(self._pending)

    # --- talking to Redis -----------------------------------------------------------------

    async def _call(
        self, op: str, tid: str, arg: str, extra: str, fence: str = ""
    ) -> dict[str, Any]:
        return self._answer(await self._link.call(op, tid, arg, extra, fence))

    def _call_now(self, op: str, tid: str, arg: str, extra: str) -> dict[str, Any]:
        """:meth:`_call` on the synchronous connection: done when it returns."""
        return self._answer(self._link.call_now(op, tid, arg, extra))

    def _answer(self, state: dict[str, Any]) -> dict[str, Any]:
        """Read a transition's answer: the newest view of the lease, and any grant it names."""
        if state["v"] >= self._view.mirror.version:
            self._view.read(state, self._clock.monotonic())
            self._heartbeat.saw(state, self._view.is_mine)
            self._reconcile(state)
        return state

    def _start_tasks(self) -> None:
        """Start listening for grants and beating, if not yet (or after a failed start)."""
        self._listener.start()
        self._heartbeat.start(self._beaten, self._expired)

    async def _start(self, ticket: Ticket) -> None:
        self._start_tasks()
        try:
            await self._listener.subscribed()
        except RedisError as exc:
            raise self._unavailable(ticket, exc) from exc

    def _look(self, version: int | None) -> None:
        """A message says the lease changed: read the state in Redis (which decides)."""
        if version is None or version > self._view.mirror.version:  # not seen here yet
            self._pending.coalesce(lambda: self._call("state", "", "", ""))

    def _lose(self, tid: str, reason: str) -> None:
        mine = self._view.mine.pop(tid, None)
        if mine is not None and mine.fence is not None:
            self._mark.drop()
            self._on_lost(mine.ticket, reason)

    def _beaten(self, state: dict[str, Any], tid: str, fence: str) -> None:
        """The heartbeat thread's answer, in the loop: the state, and a grant found gone."""
        self._answer(state)
        mine = self._view.mine.get(tid)
        if state["r"] == "lost" and mine is not None and mine.fence == fence:
            self._lose(tid, "its grant was gone or taken over when it renewed it")

    def _expired(self, reason: str) -> None:
        """No beat confirmed this process in time: fence its grant, fail its waiters."""
        if not self._heartbeat.lapsed:
            return  # confirmed since (a grant or a place taken just now, on a fresh answer)
        for tid, mine in list(self._view.mine.items()):
            if mine.fence is not None:
                self._lose(tid, reason)
            elif mine.asking is None or mine.asking.done():
                self._drop_waiter(tid, mine, f"Redis did not answer in time ({reason})")

    def _drop_waiter(self, tid: str, mine: Mine, reason: str) -> None:
        del self._view.mine[tid]
        if not mine.future.done():
            mine.future.set_exception(self._unavailable(mine.ticket, reason))

    def _unavailable(self, ticket: Ticket, why: object) -> GuardUnavailable:
        op, model = ticket.operation, ticket.model
        return GuardUnavailable(operation=op, model=model, scope=self.scope, reason=str(why))

    async def aclose(self) -> None:
        """Stop listening and beating, tell Redis what is still pending, close the client."""
        self._pending.closed = True
        await self._listener.stop()
        await self._heartbeat.stop()
        await self._pending.drain(requests=False)
        await self._link.aclose()

    def __repr__(self) -> str:
        return f"<RedisArbiter {self.key!r} mine={len(self._view.mine)}>"


def _ignore(ticket: Ticket, value: Any) -> None:
    """The default callbacks, before a guard binds its own."""
