"""The Redis scope: one GPU lease shared by processes on many hosts, through one Redis.

Same rules as :class:`~gpuguard._arbiter.LocalArbiter`; Redis decides, atomically, in
:data:`~gpuguard._redis_lua.LEASE_SCRIPT`. This process keeps only its own tickets and a
mirror of the shared state for ``current``/``snapshot()``.

* **Liveness.** The grant is a key with a TTL (default 2 s) that the holder's heartbeat
  renews every ``ttl/3``; a holder that dies frees the GPU when the key expires. Waiting
  processes beat too; a dead waiter is skipped when its turn comes.
* **Hand-off is pushed.** Every grant is published; a waiting process learns of its grant
  from that message. Only a dead holder needs a timer: a waiting process wakes when the
  holder's key is due to expire (its TTL as Redis reports it) and lets Redis grant the next.
* **Fencing.** Every grant carries a token larger than any before it (``Lease.fence``).
* **Lost leases.** A holder whose heartbeat finds its grant gone or taken over, whose
  heartbeat fails, or whose connection to Redis drops, is told at once through ``on_lost``:
  the guard stops its work and raises :class:`~gpuguard.LeaseLost`. Waiters of a process
  that lost Redis get :class:`~gpuguard.GuardUnavailable`. The heartbeat's socket timeout
  is below the TTL, so a holder knows it lost the lease before anyone else can be granted.
* **Giving back is synchronous.** ``release`` and ``withdraw`` (and ``acquire_nowait``) make
  one round trip on a second, synchronous connection, bounded by :data:`GIVE_BACK_TIMEOUT_S`:
  when they return, Redis has handed the GPU on, a waiter of this process has been granted
  in the same step (exactly as in-process), and a process that exits right after a release
  leaves nothing held. If Redis cannot be told, the TTL frees the GPU.

Requires the ``redis`` extra (redis-py's asyncio client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import Coroutine
from typing import Any, Final

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ._arbiter import Grant, OnGrant, OnLost, Queued, Ticket
from ._clock import Clock, SystemClock
from ._exceptions import GuardUnavailable
from ._redis_lua import LEASE_SCRIPT
from ._redis_mirror import Mirror
from ._redis_view import LeaseView, Mine

__all__ = ["RedisArbiter"]

logger = logging.getLogger("gpuguard.redis")

RECONNECT_S: Final = 0.1
"""Pause between attempts to reach Redis again after the connection dropped."""

GIVE_BACK_TIMEOUT_S: Final = 0.25
"""The longest a synchronous give-back may hold up the event loop (at most ``ttl/3``)."""


class RedisArbiter:
    """Grants one GPU across hosts through Redis (see the module docstring).

    Args:
        client: a redis-py asyncio client (``redis.asyncio.Redis.from_url(url)``): takes,
            heartbeats and pushed grants.
        sync_client: a redis-py client to the same Redis, with a short socket timeout:
            give-backs and ``acquire_nowait``, which must land before they return.
        name: the GPU's name; guards with the same ``name`` and ``prefix`` share one lease.
        aging_s: as for :class:`~gpuguard.GpuGuard` (use the same value on every host).
        ttl_s: the grant's time to live; a dead holder frees the GPU within it.
        prefix: the keys' prefix in Redis.
        clock: this process's clock, for the times shown in snapshots.
        queue_clock: orders the queue (aging) by this clock instead of Redis ``TIME``: for
            tests on a :class:`~gpuguard.FakeClock` in one process only.
    """

    scope = "redis"
    decides_locally = False  # taking the GPU is a round trip to Redis, awaited
    issues_fences = True

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
        self._redis = client
        self._script = client.register_script(LEASE_SCRIPT)
        self._sync = sync_client
        self._sync_script = sync_client.register_script(LEASE_SCRIPT)
        self.key = f"{prefix}:{{{name}}}"
        self._channel = f"{self.key}:events"
        self._aging_ms = "0" if aging_s is None else repr(aging_s * 1000.0)
        self.ttl_s = ttl_s
        self.heartbeat_s = ttl_s / 3
        self._clock = clock if clock is not None else SystemClock()
        self._queue_clock = queue_clock
        self._client_id = uuid.uuid4().hex[:12]
        self._ids: dict[int, str] = {}
        self._view = LeaseView(self._client_id, aging_s)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._closed = False
        self._listener: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._wake = asyncio.Event()
        self._in_order = asyncio.Lock()
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
        """Connect to the Redis at ``url`` (``redis://host:6379/0``).

        Every call times out well inside the TTL, so a holder cut off from Redis learns
        it lost the lease before the lease can expire and pass to another host; a
        synchronous give-back waits at most :data:`GIVE_BACK_TIMEOUT_S`.
        """
        timeout = ttl_s / 3
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        quick = min(timeout, GIVE_BACK_TIMEOUT_S)
        sync_client = redis.Redis.from_url(url, socket_timeout=quick, socket_connect_timeout=quick)
        return cls(
            client, sync_client, name, aging_s=aging_s, ttl_s=ttl_s, prefix=prefix, clock=clock
        )

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant and loss callbacks."""
        self._on_grant, self._on_lost = on_grant, on_lost

    # --- taking the GPU (Redis decides) ----------------------------------------------------

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody holds and nobody waits: one synchronous round trip.

        No round trip while the last known state is busy. Raises
        :class:`~gpuguard.GuardUnavailable` if Redis does not answer in time.
        """
        if self.holder() is not None or self.queue_length():
            return False
        self._start_tasks()
        tid, mine = self._track(ticket, now)
        try:
            state = self._call_now("acquire", tid, self._ticket_body(ticket), "0")
        except RedisError as exc:
            self._view.mine.pop(tid, None)
            raise self._unavailable(ticket, exc) from exc
        if state["r"] != "granted":
            self._view.mine.pop(tid, None)
            return False
        self._granted(tid, mine, state["x"], waited_s=0.0, notify=False)
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
        answered = asyncio.get_running_loop().create_future()
        self._inflight.add(answered)
        try:
            return await self._ask(op, ticket, now, limit=limit)
        finally:
            answered.set_result(None)
            self._inflight.discard(answered)

    async def _ask(
        self, op: str, ticket: Ticket, now: float, *, limit: int
    ) -> asyncio.Future[None] | None:
        # Tracked (and counted in the line) from the start: its grant may be published at
        # once, and a later request of this process must see it ahead of itself.
        tid, mine = self._track(ticket, now)
        call = asyncio.ensure_future(self._send(op, tid, ticket, str(limit)))
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
            self._granted(tid, mine, state["x"], waited_s=0.0, notify=op == "enqueue")
            return mine.future
        if result == "queued":
            self._wake.set()
            return mine.future
        self._view.mine.pop(tid, None)
        return None

    async def _send(self, op: str, tid: str, ticket: Ticket, limit: str) -> dict[str, Any]:
        await self._start(ticket)
        return await self._call(op, tid, self._ticket_body(ticket), limit)

    def _track(self, ticket: Ticket, now: float) -> tuple[str, Mine]:
        """Start keeping ``ticket`` as one of this process's: its Redis id and its record."""
        tid = self._ids.setdefault(ticket.lease_id, f"{self._client_id}:{ticket.lease_id}")
        mine = self._view.mine[tid] = Mine(ticket, now, asyncio.get_running_loop().create_future())
        return tid, mine

    def _ticket_body(self, ticket: Ticket) -> str:
        return json.dumps(
            {
                "c": self._client_id,
                "l": ticket.lease_id,
                "o": ticket.operation,
                "m": ticket.model,
                "p": int(ticket.priority),
                "pid": ticket.owner.pid,
                "host": ticket.owner.host,
                "proc": ticket.owner.process,
                "ttl": int(self.ttl_s * 1000),
            }
        )

    def _abandoned(self, tid: str, mine: Mine) -> None:
        """Redis answered a request whose task was cancelled meanwhile: undo what it did."""
        if self._view.mine.get(tid) is mine:
            del self._view.mine[tid]
        self._give_back("drop", tid, "")

    def _granted(self, tid: str, mine: Mine, fence: str, *, waited_s: float, notify: bool) -> None:
        if mine.fence is not None:
            return  # both the answer and the published grant say so; the first one counts
        if mine.gave_up:
            # Its task gave up before the grant reached this process: hand the GPU on.
            if self._view.mine.get(tid) is mine:
                del self._view.mine[tid]
            self._give_back("release", tid, fence)
            return
        mine.fence = fence
        mine.grant = Grant(mine.ticket, self._clock.monotonic(), fence=int(fence))
        if notify:
            self._on_grant(mine.ticket, waited_s)
        if not mine.future.done():
            mine.future.set_result(None)
        self._wake.set()

    def _take_grant(self, state: dict[str, Any]) -> None:
        """If Redis names a waiting ticket of this process as the holder, grant it here."""
        h = state["h"]
        mine = self._view.mine.get(h["t"]) if h else None
        if mine is not None and mine.fence is None:
            waited = self._clock.monotonic() - mine.requested_at
            self._granted(h["t"], mine, h["f"], waited_s=waited, notify=True)

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
        try:
            state = self._call_now("withdraw", tid, "", "")
        except RedisError as exc:
            _told_too_late(exc)  # if Redis grants it later, the listener gives it back
        else:
            if state["r"] == "granted":  # by another's release, and not yet heard here
                waited = self._clock.monotonic() - mine.requested_at
                self._granted(tid, mine, state["x"], waited_s=waited, notify=True)
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
        self._give_back("release", tid, mine.fence, " ".join(cancelled))

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Show the grant as hung, here at once and in Redis for every host."""
        tid = self._ids.get(ticket.lease_id)
        mine = self._view.mine.get(tid) if tid is not None else None
        if tid is not None and mine is not None and mine.grant is not None:
            mine.grant = Grant(ticket, mine.grant.granted_at, now, mine.grant.fence)
            self._background(self._call("hung", tid, "", ""))

    def _give_back(self, op: str, tid: str, arg: str, extra: str = "") -> None:
        """Tell Redis now; a grant it makes to a waiter of this process is taken at once."""
        try:
            self._call_now(op, tid, arg, extra)
        except RedisError as exc:
            _told_too_late(exc)

    def _background(self, step: Coroutine[Any, Any, object]) -> None:
        if self._closed:
            step.close()
            return
        task = asyncio.ensure_future(step)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _told_too_late(task.exception())

    # --- what is known here (:class:`~gpuguard._redis_view.LeaseView`) --------------------

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
        while True:
            while self._tasks or self._inflight:
                await asyncio.gather(*self._tasks, *self._inflight, return_exceptions=True)
            if self._listener is None or self._listener.done():
                return
            token = uuid.uuid4().hex
            heard = self._syncs[token] = asyncio.get_running_loop().create_future()
            await self._redis.publish(self._channel, f"sync {token}")
            await heard
            for _ in range(3):
                await asyncio.sleep(0)
            if not self._tasks and not self._inflight:
                return

    # --- talking to Redis -----------------------------------------------------------------

    async def _call(
        self, op: str, tid: str, arg: str, extra: str, fence: str = ""
    ) -> dict[str, Any]:
        # One call at a time, in order: a pool would let a later request of this process
        # overtake an earlier one on another connection (FIFO within a priority).
        async with self._in_order:
            raw = await self._script(keys=[self.key], args=self._args(op, tid, arg, extra, fence))
        return self._answer(raw)

    def _call_now(self, op: str, tid: str, arg: str, extra: str) -> dict[str, Any]:
        """:meth:`_call` on the synchronous connection: done when it returns."""
        raw = self._sync_script(keys=[self.key], args=self._args(op, tid, arg, extra, ""))
        return self._answer(raw)

    def _args(self, op: str, tid: str, arg: str, extra: str, fence: str) -> list[str]:
        now = "" if self._queue_clock is None else repr(self._queue_clock.monotonic() * 1000.0)
        return [op, tid, now, self._aging_ms, arg, extra, fence]

    def _answer(self, raw: bytes) -> dict[str, Any]:
        """Read a transition's answer: the newest view of the lease, and any grant it names."""
        state: dict[str, Any] = json.loads(raw)
        if state["v"] >= self._view.mirror.version:
            self._apply(state)
            self._take_grant(state)
        return state

    def _apply(self, state: dict[str, Any]) -> None:
        """Take Redis's view of the lease."""
        self._view.read(state, self._clock.monotonic())
        self._wake.set()

    def _start_tasks(self) -> None:
        """Start listening for grants and beating, if not yet (or after a failed start)."""
        if self._listener is None or self._listener.done():
            self._subscribed = asyncio.get_running_loop().create_future()
            self._listener = asyncio.create_task(self._listen(), name="gpuguard-redis-listen")
        if self._beater is None:
            self._beater = asyncio.create_task(self._beat(), name="gpuguard-redis-beat")

    async def _start(self, ticket: Ticket) -> None:
        self._start_tasks()
        assert self._subscribed is not None
        try:
            await asyncio.shield(self._subscribed)
        except RedisError as exc:
            raise self._unavailable(ticket, exc) from exc

    async def _listen(self) -> None:
        """Read grants as Redis publishes them; a dropped connection loses every grant here."""
        assert self._subscribed is not None
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                if not self._subscribed.done():
                    self._subscribed.set_result(None)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._on_message(message["data"].decode())
            except RedisError as exc:
                if not self._subscribed.done():
                    self._subscribed.set_exception(exc)
                    return
                self._connection_lost(f"connection to Redis lost: {exc}")
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
            await asyncio.sleep(RECONNECT_S)

    def _on_message(self, data: str) -> None:
        kind, _, rest = data.partition(" ")
        if kind == "sync":
            future = self._syncs.pop(rest, None)
            if future is not None and not future.done():
                future.set_result(None)
            return
        tid, _, fence = rest.partition(" ")
        for mine_id, mine in list(self._view.mine.items()) if kind == "grant" else []:
            if mine_id == tid and mine.fence is None:
                waited = self._clock.monotonic() - mine.requested_at
                self._granted(tid, mine, fence, waited_s=waited, notify=True)
            elif mine_id != tid and mine.fence is not None and int(fence) > int(mine.fence):
                self._lose(mine_id, "its grant expired and the GPU was granted to another")
        if kind == "grant" and self._view.is_mine(tid) and tid not in self._view.mine:
            # Granted to a ticket this process gave up on without Redis hearing it: give
            # it back (the fence makes this a no-op if it was released meanwhile).
            self._background(self._call("release", tid, fence, ""))
        self._background(self._call("state", "", "", ""))

    def _lose(self, tid: str, reason: str) -> None:
        mine = self._view.mine.pop(tid, None)
        if mine is not None and mine.fence is not None:
            self._on_lost(mine.ticket, reason)

    def _connection_lost(self, reason: str) -> None:
        """Redis is gone or restarted: no grant here can be trusted, no waiter will be served."""
        for tid, mine in list(self._view.mine.items()):
            if mine.fence is not None:
                self._lose(tid, reason)
            else:
                del self._view.mine[tid]
                if not mine.future.done():
                    mine.future.set_exception(self._unavailable(mine.ticket, reason))
        self._view.mirror = Mirror()

    async def _beat(self) -> None:
        """Renew this process's grant and liveness; wake when the holder's key should expire."""
        loop = asyncio.get_running_loop()
        due: float | None = None
        while True:
            due = (
                None
                if not self._view.mine
                else min(due or math.inf, loop.time() + self._beat_in_s())
            )
            timeout = None if due is None else max(0.0, due - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            if due is None or loop.time() < due:
                continue
            due = None
            holding = self._view.holding()
            tid, fence = ("", "") if holding is None else (holding[0], holding[1].fence or "")
            ttl_ms = str(int(self.ttl_s * 1000))
            try:
                state = await self._call("beat", tid, self._client_id, ttl_ms, fence)
            except RedisError as exc:
                self._connection_lost(f"heartbeat failed: {exc}")
                continue
            if holding is not None and state["r"] == "lost":
                self._lose(tid, "its grant was gone or taken over when it renewed it")

    def _beat_in_s(self) -> float:
        expires = self._view.mirror.expires_in_s
        if expires is None or self._view.holding() is not None:
            return self.heartbeat_s
        # Waiting: also wake as the holder's grant expires (a dead holder), to be served.
        return min(self.heartbeat_s, expires + 0.001)

    def _unavailable(self, ticket: Ticket, why: object) -> GuardUnavailable:
        return GuardUnavailable(
            operation=ticket.operation, model=ticket.model, scope=self.scope, reason=str(why)
        )

    async def aclose(self) -> None:
        """Stop listening and beating, tell Redis what is still pending, close the client."""
        self._closed = True
        for task in (self._listener, self._beater):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError):
                    await task
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
        self._sync.close()

    def __repr__(self) -> str:
        return f"<RedisArbiter {self.key!r} mine={len(self._view.mine)}>"


def _told_too_late(exc: BaseException | None) -> None:
    """Redis did not hear a give-back: say so, where operators look; the TTL covers it."""
    logger.warning("telling Redis failed (the lease TTL covers it): %r", exc)


def _ignore(ticket: Ticket, value: Any) -> None:
    """The default callbacks, before a guard binds its own."""
