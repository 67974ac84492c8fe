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
* **Giving back** (release, withdraw, hung) updates this process's view at once and tells
  Redis in a background task; if that never arrives, the TTL frees the GPU.

Requires the ``redis`` extra (redis-py's asyncio client).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ._arbiter import Grant, OnGrant, OnLost, Queued, Ticket
from ._clock import Clock, SystemClock
from ._events import Priority
from ._exceptions import GuardUnavailable
from ._queue import effective_priority
from ._redis_lua import LEASE_SCRIPT
from ._redis_mirror import Mirror

__all__ = ["RedisArbiter"]

logger = logging.getLogger("gpuguard.redis")

RECONNECT_S: Final = 0.1
"""Pause between attempts to reach Redis again after the connection dropped."""


@dataclass(slots=True)
class _Mine:
    """A ticket of this process: waiting (``future`` unresolved) or holding (``fence``)."""

    ticket: Ticket
    requested_at: float
    future: asyncio.Future[None]
    fence: str | None = None
    grant: Grant | None = None


class RedisArbiter:
    """Grants one GPU across hosts through Redis (see the module docstring).

    Args:
        client: a redis-py asyncio client (``redis.asyncio.Redis.from_url(url)``).
        name: the GPU's name; guards with the same ``name`` and ``prefix`` share one lease.
        aging_s: as for :class:`~gpuguard.GpuGuard` (use the same value on every host).
        ttl_s: the grant's time to live; a dead holder frees the GPU within it.
        prefix: the keys' prefix in Redis.
        clock: this process's clock, for the times shown in snapshots.
        queue_clock: orders the queue (aging) by this clock instead of Redis ``TIME``: for
            tests on a :class:`~gpuguard.FakeClock` in one process only.
    """

    scope = "redis"

    def __init__(
        self,
        client: aioredis.Redis[bytes],
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
        self.key = f"{prefix}:{{{name}}}"
        self._channel = f"{self.key}:events"
        self._aging_s = aging_s
        self._aging_ms = "0" if aging_s is None else repr(aging_s * 1000.0)
        self.ttl_s = ttl_s
        self.heartbeat_s = ttl_s / 3
        self._clock = clock if clock is not None else SystemClock()
        self._queue_clock = queue_clock
        self._client_id = uuid.uuid4().hex[:12]
        self._ids: dict[int, str] = {}
        self._mine: dict[str, _Mine] = {}
        self._mirror = Mirror()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._closed = False
        self._listener: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._wake = asyncio.Event()
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
        it lost the lease before the lease can expire and pass to another host.
        """
        timeout = ttl_s / 3
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        return cls(client, name, aging_s=aging_s, ttl_s=ttl_s, prefix=prefix, clock=clock)

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant and loss callbacks."""
        self._on_grant, self._on_lost = on_grant, on_lost

    # --- taking the GPU (async: Redis decides) ----------------------------------------------

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool | None:
        """False while the last known state is busy; a grant needs Redis (None)."""
        if self.holder() is not None or self.queue_length():
            return False
        return None

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
        await self._start(ticket)
        tid = self._ids.setdefault(ticket.lease_id, f"{self._client_id}:{ticket.lease_id}")
        mine = _Mine(ticket, now, asyncio.get_running_loop().create_future())
        self._mine[tid] = mine  # before the call: its grant may be published at once
        body = json.dumps(
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
        call = asyncio.ensure_future(self._call(op, tid, body, str(limit)))
        try:
            state = await asyncio.shield(call)
        except asyncio.CancelledError:
            # Redis may decide after all: whatever it grants or queues is given back.
            call.add_done_callback(lambda _: self._give_back(tid, "withdraw", ""))
            self._mine.pop(tid, None)
            raise
        except RedisError as exc:
            self._mine.pop(tid, None)
            raise self._unavailable(ticket, exc) from exc
        result = state["r"]
        if result == "granted":
            self._granted(tid, mine, state["x"], waited_s=0.0, notify=op == "enqueue")
            return mine.future
        if result == "queued":
            self._wake.set()
            return mine.future
        self._mine.pop(tid, None)
        return None

    def _granted(self, tid: str, mine: _Mine, fence: str, *, waited_s: float, notify: bool) -> None:
        if mine.fence is not None:
            return  # both the answer and the published grant say so; the first one counts
        mine.fence = fence
        mine.grant = Grant(mine.ticket, self._clock.monotonic(), fence=int(fence))
        if notify:
            self._on_grant(mine.ticket, waited_s)
        if not mine.future.done():
            mine.future.set_result(None)
        self._wake.set()

    # --- giving it back (sync here, Redis told in the background) ----------------------------

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line; False if this process already saw the grant."""
        tid = self._ids.get(ticket.lease_id)
        mine = self._mine.get(tid) if tid is not None else None
        if tid is None or mine is None or mine.fence is not None:
            return False
        del self._mine[tid]
        self._give_back(tid, "withdraw", "")
        return True

    def release(self, ticket: Ticket, now: float) -> None:
        """Free the GPU; Redis grants the next waiter and publishes it."""
        tid = self._ids.pop(ticket.lease_id, None)
        mine = self._mine.pop(tid, None) if tid is not None else None
        if tid is not None and mine is not None and mine.fence is not None:
            self._give_back(tid, "release", mine.fence)

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Show the grant as hung, here at once and in Redis for every host."""
        tid = self._ids.get(ticket.lease_id)
        mine = self._mine.get(tid) if tid is not None else None
        if tid is not None and mine is not None and mine.grant is not None:
            mine.grant = Grant(ticket, mine.grant.granted_at, now, mine.grant.fence)
            self._background(self._call("hung", tid, "", ""))

    def _give_back(self, tid: str, op: str, fence: str) -> None:
        self._background(self._call(op, tid, fence, ""))

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
            # The grant's TTL frees the GPU anyway; say so, once, where operators look.
            logger.warning("telling Redis failed (the lease TTL covers it): %r", task.exception())

    # --- what is known here ---------------------------------------------------------------

    def holder(self) -> Grant | None:
        """The grant of this process, else the holder Redis last reported."""
        for mine in self._mine.values():
            if mine.grant is not None:
                return mine.grant
        holder_id = self._mirror.holder_id
        if holder_id is None or holder_id.startswith(self._client_id + ":"):
            return None  # a grant of ours that this process has already given back
        return self._mirror.holder

    def waiters(self, now: float) -> list[Queued]:
        """The line as Redis last reported it (less tickets this process withdrew)."""
        line = [
            (seq, dataclasses.replace(queued, effective_priority=self._effective(queued, now)))
            for tid, seq, queued in self._mirror.waiters
            if self._still_waiting(tid)
        ]
        # Redis's order as of its last report, aged to ``now`` by the same rules.
        line.sort(key=lambda item: (-item[1].effective_priority, item[0]))
        return [queued for _, queued in line]

    def _still_waiting(self, tid: str) -> bool:
        """False for a ticket of this process that has left the line since Redis reported."""
        if not tid.startswith(self._client_id + ":"):
            return True
        mine = self._mine.get(tid)
        return mine is not None and mine.fence is None

    def _effective(self, queued: Queued, now: float) -> Priority:
        # A remote arrival converted to this clock may land a hair after ``now``.
        enqueued_at = min(queued.enqueued_at, now)
        return effective_priority(queued.ticket.priority, enqueued_at, now, self._aging_s)

    def queue_length(self) -> int:
        """How many wait, as Redis last reported."""
        return sum(self._still_waiting(tid) for tid, _, _ in self._mirror.waiters)

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
        now = "" if self._queue_clock is None else repr(self._queue_clock.monotonic() * 1000.0)
        args = [op, tid, now, self._aging_ms, arg, extra, fence]
        raw = await self._script(keys=[self.key], args=args)
        state: dict[str, Any] = json.loads(raw)
        self._apply(state)
        return state

    def _apply(self, state: dict[str, Any]) -> None:
        """Take Redis's view of the lease, unless a newer one was seen already."""
        if state["v"] >= self._mirror.version:
            mine = {tid: m.requested_at for tid, m in self._mine.items()}
            self._mirror = Mirror.read(state, self._clock.monotonic(), mine)
            self._wake.set()

    async def _start(self, ticket: Ticket) -> None:
        if self._listener is None or self._listener.done():
            self._subscribed = asyncio.get_running_loop().create_future()
            self._listener = asyncio.create_task(self._listen(), name="gpuguard-redis-listen")
        if self._beater is None:
            self._beater = asyncio.create_task(self._beat(), name="gpuguard-redis-beat")
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
        for mine_id, mine in list(self._mine.items()) if kind == "grant" else []:
            if mine_id == tid and mine.fence is None:
                waited = self._clock.monotonic() - mine.requested_at
                self._granted(tid, mine, fence, waited_s=waited, notify=True)
            elif mine_id != tid and mine.fence is not None and int(fence) > int(mine.fence):
                self._lose(mine_id, "its grant expired and the GPU was granted to another")
        self._background(self._call("state", "", "", ""))

    def _lose(self, tid: str, reason: str) -> None:
        mine = self._mine.pop(tid, None)
        if mine is not None and mine.fence is not None:
            self._on_lost(mine.ticket, reason)

    def _connection_lost(self, reason: str) -> None:
        """Redis is gone or restarted: no grant here can be trusted, no waiter will be served."""
        for tid, mine in list(self._mine.items()):
            if mine.fence is not None:
                self._lose(tid, reason)
            else:
                del self._mine[tid]
                if not mine.future.done():
                    mine.future.set_exception(self._unavailable(mine.ticket, reason))
        self._mirror = Mirror()

    async def _beat(self) -> None:
        """Renew this process's grant and liveness; wake when the holder's key should expire."""
        loop = asyncio.get_running_loop()
        due: float | None = None
        while True:
            due = None if not self._mine else min(due or math.inf, loop.time() + self._beat_in_s())
            timeout = None if due is None else max(0.0, due - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            if due is None or loop.time() < due:
                continue
            due = None
            holding = next(((t, m) for t, m in self._mine.items() if m.fence is not None), None)
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
        expires = self._mirror.expires_in_s
        if expires is None or any(m.fence is not None for m in self._mine.values()):
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

    def __repr__(self) -> str:
        return f"<RedisArbiter {self.key!r} mine={len(self._mine)}>"


def _ignore(ticket: Ticket, value: Any) -> None:
    """The default callbacks, before a guard binds its own."""
