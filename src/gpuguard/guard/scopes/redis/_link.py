"""The Redis scope's connections: the lease script, in order, on three clients, and pub/sub.

One asyncio client carries requests (one at a time, in the order they were made: a pool would
let a later request of this process overtake an earlier one on another connection, breaking
FIFO within a priority) and the pub/sub subscription; one synchronous client, with a short
socket timeout, carries give-backs that must land before they return; a third, synchronous,
is the heartbeat thread's own. The URL may name an ACL user and password
(``redis://user:password@host``) and TLS (``rediss://``, with ``ssl_ca_certs=...`` and the
other ``ssl_*`` options redis-py reads from the query); all three clients use them.

Every answer carries ``sent``: this host's monotonic time when the call was sent. Redis
renewed or granted nothing before then, so a TTL it reports is counted from there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from ...._clock import Clock
from ._lua import LEASE_SCRIPT

__all__ = ["GIVE_BACK_TIMEOUT_S", "RedisLink"]

GIVE_BACK_TIMEOUT_S: Final = 0.25
"""The longest a synchronous give-back may hold up the event loop (at most ``ttl/3``)."""


class RedisLink:
    """Runs the lease script for one GPU's keys (``key``) and listens on its channels.

    Process ``client_id`` hears its own grants on :attr:`own_channel` and the lease going
    free on :attr:`channel`; every call names ``mine()``, its tickets, so that the answer says
    which of them are still in line. ``aging_s`` is passed to every transition; ``beat_timeout_s``
    bounds each call of the heartbeat's connection; ``queue_clock`` (tests on a fake clock,
    one process only) replaces Redis ``TIME`` for the queue's times.
    """

    def __init__(
        self,
        client: aioredis.Redis[bytes],
        sync_client: redis.Redis[bytes],
        key: str,
        *,
        client_id: str,
        mine: Callable[[], Collection[str]],
        aging_s: float | None,
        beat_timeout_s: float,
        queue_clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._script = client.register_script(LEASE_SCRIPT)
        self._sync = sync_client
        self._sync_script = sync_client.register_script(LEASE_SCRIPT)
        self._beat_client = _like(sync_client, beat_timeout_s)
        self._beat_script = self._beat_client.register_script(LEASE_SCRIPT)
        self.key = key
        self.channel = f"{key}:events"
        self.own_channel = f"{key}:events:{client_id}"
        self._mine = mine
        self._aging_ms = "0" if aging_s is None else repr(aging_s * 1000.0)
        self._queue_clock = queue_clock
        self._in_order = asyncio.Lock()

    @staticmethod
    def clients(url: str, ttl_s: float) -> tuple[aioredis.Redis[bytes], redis.Redis[bytes]]:
        """The two clients for ``url``, each call bounded well inside the TTL.

        A holder cut off from Redis learns it lost the lease before the lease can expire
        and pass to another host; a synchronous give-back waits at most
        :data:`GIVE_BACK_TIMEOUT_S`.
        """
        timeout = ttl_s / 3
        # A connection Redis closed (a restart, CLIENT KILL) is replaced and the call sent
        # once more: Redis ran nothing of it. A timeout is not retried (it may have run).
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=AsyncRetry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        quick = min(timeout, GIVE_BACK_TIMEOUT_S)
        sync_client = redis.Redis.from_url(
            url,
            socket_timeout=quick,
            socket_connect_timeout=quick,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        return client, sync_client

    async def call(
        self, op: str, tid: str, arg: str, extra: str, fence: str = ""
    ) -> dict[str, Any]:
        """Run transition ``op``; calls of this process reach Redis in the order made."""
        async with self._in_order:
            sent = time.monotonic()
            raw = await self._script(keys=[self.key], args=self._args(op, tid, arg, extra, fence))
        return _decode(raw, sent)

    def call_now(self, op: str, tid: str, arg: str, extra: str) -> dict[str, Any]:
        """:meth:`call` on the synchronous connection: done when it returns."""
        sent = time.monotonic()
        raw = self._sync_script(keys=[self.key], args=self._args(op, tid, arg, extra, ""))
        return _decode(raw, sent)

    def beat(
        self, held: Sequence[tuple[str, str, str]], *, client_id: str, ttl_ms: str
    ) -> dict[str, Any]:
        """Renew ``held`` (id, fence, JSON of each grant) on the heartbeat's own connection.

        Called from the heartbeat's thread; with no grants it renews the process's liveness.
        """
        sent = time.monotonic()
        named = [[tid, fence, json.loads(ticket)] for tid, fence, ticket in held]
        grants = json.dumps(named) if named else ""
        args = self._args("beat", "", client_id, ttl_ms, "", grants)
        return _decode(self._beat_script(keys=[self.key], args=args), sent)

    def pubsub(self) -> aioredis.client.PubSub:
        """A new subscription connection (subscribe it to both channels)."""
        return self._client.pubsub()

    async def publish(self, message: str) -> None:
        """Publish ``message`` on this process's own channel (only it listens there)."""
        await self._client.publish(self.own_channel, message)

    async def aclose(self) -> None:
        """Close both clients."""
        await self._client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
        self._sync.close()
        self._beat_client.close()

    def _args(
        self, op: str, tid: str, arg: str, extra: str, fence: str, ticket: str = ""
    ) -> list[str]:
        now = "" if self._queue_clock is None else repr(self._queue_clock.monotonic() * 1000.0)
        # tuple() of a dict is one C call: safe from the heartbeat's thread too.
        mine = " ".join(tuple(self._mine()))
        return [op, tid, now, self._aging_ms, arg, extra, fence, ticket, mine]


def _decode(raw: bytes, sent: float) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(raw)
    state["v"], state["sent"] = int(state["v"]), sent
    return state


def _like(client: redis.Redis[bytes], timeout_s: float) -> redis.Redis[bytes]:
    """A client to the same Redis as ``client`` (user, password, TLS), with its own timeouts."""
    pool = client.connection_pool
    options = {**pool.connection_kwargs, "socket_timeout": timeout_s}
    options["socket_connect_timeout"] = timeout_s
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **options)
    )
