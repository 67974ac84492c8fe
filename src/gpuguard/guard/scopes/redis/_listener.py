"""The Redis scope's subscription: what Redis publishes on a lease's channels, as calls.

A grant is published as ``grant <ticket> <fence> ...`` on the granted process's own channel
only; the lease going free with nobody waiting as ``free`` on the lease's channel, which every
process hears. Any client of the same Redis can publish, so a message is a hint to look
(``on_change`` reads the state in Redis, which decides), unless the lease script signed it
for this process: ``on_grant`` gets a grant message's text to check. ``sync <token>``
messages are this process's own markers (:meth:`GrantListener.sync`: every message published
before has been handled). A dropped subscription is re-established, and then ``on_change``
runs too (messages may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Final

from redis.exceptions import RedisError

from ._link import RedisLink
from ._pending import PendingCalls

__all__ = ["RECONNECT_S", "GrantListener"]

RECONNECT_S: Final = 0.1
"""Pause between attempts to reach Redis again after the connection dropped."""


class GrantListener:
    """Listens on ``link``'s two channels in a task of its own.

    ``on_grant(note)`` runs for a ``grant`` message (``note``: what follows the word),
    ``on_change(version)`` for every other message but this process's own markers, and after
    the subscription was re-established (``version``: the one a ``free`` message names, else
    None).
    """

    def __init__(
        self,
        link: RedisLink,
        *,
        on_change: Callable[[int | None], None],
        on_grant: Callable[[str], None],
    ) -> None:
        self._link = link
        self._on_change = on_change
        self._on_grant = on_grant
        self._task: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self._syncs: dict[str, asyncio.Future[None]] = {}

    @property
    def running(self) -> bool:
        """True while the listening task runs."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start listening, unless already (a failed start is tried again)."""
        if not self.running:
            self._subscribed = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._listen(), name="gpuguard-redis-listen")

    async def subscribed(self) -> None:
        """Return once subscribed; raise the :class:`RedisError` if the first try failed."""
        self.start()
        assert self._subscribed is not None
        await asyncio.shield(self._subscribed)

    async def sync(self) -> None:
        """Return once every message published before this call has been handled."""
        token = uuid.uuid4().hex
        heard = self._syncs[token] = asyncio.get_running_loop().create_future()
        await self._link.publish(f"sync {token}")
        await heard

    async def settle(self, pending: PendingCalls) -> None:
        """Wait until ``pending`` calls have landed and every message before was handled."""
        while True:
            await pending.drain()
            if not self.running:
                return
            await self.sync()
            for _ in range(3):
                await asyncio.sleep(0)
            if not pending.busy:
                return

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self._task

    async def _listen(self) -> None:
        assert self._subscribed is not None
        while True:
            pubsub = self._link.pubsub()
            try:
                await pubsub.subscribe(self._link.channel, self._link.own_channel)
                if self._subscribed.done():
                    self._on_change(None)  # back after a drop: what was missed is in Redis
                else:
                    self._subscribed.set_result(None)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._dispatch(message["data"].decode(errors="replace"))
            except RedisError as exc:
                if not self._subscribed.done():
                    self._subscribed.set_exception(exc)
                    return
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
            await asyncio.sleep(RECONNECT_S)

    def _dispatch(self, data: str) -> None:
        kind, _, rest = data.partition(" ")
        future = self._syncs.pop(rest, None) if kind == "sync" else None
        if future is not None:
            if not future.done():
                future.set_result(None)
        elif kind == "grant":
            self._on_grant(rest)
        else:
            self._on_change(int(rest) if kind == "free" and rest.isdigit() else None)
