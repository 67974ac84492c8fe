"""The Redis scope's connections: the lease script, in order, on two clients, and pub/sub.

One asyncio client carries requests (one at a time, in the order they were made: a pool would
let a later request of this process overtake an earlier one on another connection, breaking
FIFO within a priority) and the pub/sub subscription; one synchronous client, with a short
socket timeout, carries give-backs that must land before they return.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

import redis
import redis.asyncio as aioredis

from ...._clock import Clock
from ._lua import LEASE_SCRIPT

__all__ = ["GIVE_BACK_TIMEOUT_S", "RedisLink"]

GIVE_BACK_TIMEOUT_S: Final = 0.25
"""The longest a synchronous give-back may hold up the event loop (at most ``ttl/3``)."""


class RedisLink:
    """Runs the lease script for one GPU's keys (``key``) and listens on its channel.

    ``aging_s`` is passed to every transition; ``queue_clock`` (tests on a fake clock, one
    process only) replaces Redis ``TIME`` for the queue's times.
    """

    def __init__(
        self,
        client: aioredis.Redis[bytes],
        sync_client: redis.Redis[bytes],
        key: str,
        *,
        aging_s: float | None,
        queue_clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._script = client.register_script(LEASE_SCRIPT)
        self._sync = sync_client
        self._sync_script = sync_client.register_script(LEASE_SCRIPT)
        self.key = key
        self.channel = f"{key}:events"
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
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        quick = min(timeout, GIVE_BACK_TIMEOUT_S)
        sync_client = redis.Redis.from_url(url, socket_timeout=quick, socket_connect_timeout=quick)
        return client, sync_client

    async def call(
        self, op: str, tid: str, arg: str, extra: str, fence: str = ""
    ) -> dict[str, Any]:
        """Run transition ``op``; calls of this process reach Redis in the order made."""
        async with self._in_order:
            raw = await self._script(keys=[self.key], args=self._args(op, tid, arg, extra, fence))
        return _decode(raw)

    def call_now(self, op: str, tid: str, arg: str, extra: str) -> dict[str, Any]:
        """:meth:`call` on the synchronous connection: done when it returns."""
        raw = self._sync_script(keys=[self.key], args=self._args(op, tid, arg, extra, ""))
        return _decode(raw)

    def pubsub(self) -> aioredis.client.PubSub:
        """A new subscription connection (subscribe it to :attr:`channel`)."""
        return self._client.pubsub()

    async def publish(self, message: str) -> None:
        """Publish ``message`` on the lease's channel."""
        await self._client.publish(self.channel, message)

    async def aclose(self) -> None:
        """Close both clients."""
        await self._client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
        self._sync.close()

    def _args(self, op: str, tid: str, arg: str, extra: str, fence: str) -> list[str]:
        now = "" if self._queue_clock is None else repr(self._queue_clock.monotonic() * 1000.0)
        return [op, tid, now, self._aging_ms, arg, extra, fence]


def _decode(raw: bytes) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(raw)
    return state
