"""The Redis scope's heartbeat: renew this process's grant and liveness, notice dead holders.

While this process has tickets it beats every ``ttl/3``: a holder renews its grant's TTL
(Redis answers ``lost`` if the grant is gone or another holds it), a waiter renews its
process's liveness key. A waiter also wakes as the holder's grant is due to expire, so that
Redis can grant the next waiter when a holder died.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from ._view import LeaseView

__all__ = ["Heartbeat"]

Beat = Callable[[str, str], Awaitable[dict[str, Any]]]
"""Renew: ``beat(ticket, fence)`` for the holding ticket (``""`` for none), Redis's answer."""


class Heartbeat:
    """Beats for ``view``'s tickets; ``wake`` is set whenever they or the lease change.

    ``on_failed(reason)`` runs when Redis cannot be reached, ``on_lost(ticket)`` when Redis
    says the holding ticket's grant is gone.
    """

    def __init__(
        self,
        view: LeaseView,
        wake: asyncio.Event,
        beat: Beat,
        *,
        every_s: float,
        on_failed: Callable[[str], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self._view = view
        self._wake = wake
        self._beat = beat
        self.every_s = every_s
        self._on_failed = on_failed
        self._on_lost = on_lost

    async def run(self) -> None:
        """Beat until cancelled."""
        loop = asyncio.get_running_loop()
        due: float | None = None
        while True:
            due = (
                None if not self._view.mine else min(due or math.inf, loop.time() + self._next_s())
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
            try:
                state = await self._beat(tid, fence)
            except RedisError as exc:
                self._on_failed(f"heartbeat failed: {exc}")
                continue
            if holding is not None and state["r"] == "lost":
                self._on_lost(tid)

    def _next_s(self) -> float:
        expires = self._view.mirror.expires_in_s
        if expires is None or self._view.holding() is not None:
            return self.every_s
        # Waiting: also wake as the holder's grant expires (a dead holder), to be served.
        return min(self.every_s, expires + 0.001)
