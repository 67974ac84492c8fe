"""The Redis scope's heartbeat, in threads of its own: renewals no event loop can starve.

While this process has tickets, a thread beats every ``every_s`` on a connection of its own:
a holder renews its grant's TTL (Redis answers ``lost`` if the grant is gone or another
holds it, and re-asserts a grant that Redis forgot with all its data), a waiter renews its
process's liveness key. A waiter also beats as the holder's grant is due to expire, so that
Redis grants the next waiter when a holder died. A blocking call on the event loop, a
GIL-releasing thread or a slow loop does not delay a beat.

Each answered beat *confirms* the grant until ``sent + ttl`` by this host's clock (Redis
renewed it no earlier than it was sent). A second thread, the fence, watches that deadline:
``margin_s`` before it, unless a later beat confirmed more, it reports ``on_expired`` once,
so the holder stops its work before its TTL can lapse by its own clock and Redis hand the
GPU on. Answers and expiries are handed to the event loop with ``call_soon_threadsafe``.

The threads read the arbiter's tickets through ``tickets()``, which returns a copy taken in
one step (``dict.copy`` under the GIL); they never change them.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from redis.exceptions import RedisError

from ._view import Mine

__all__ = ["RETRY_S", "Heartbeat"]

RETRY_S: Final = 0.05
"""Pause before a beat that failed (no answer, connection refused) is tried again."""

Beat = Callable[[str, str, str], dict[str, Any]]
"""``beat(ticket, fence, ticket_json)`` for the holding ticket (``""`` for none): the answer."""


class Heartbeat:
    """The beating and fencing threads of one arbiter (see the module docstring).

    ``on_answer(state, ticket, fence)`` runs in the loop for every answered beat,
    ``on_expired(reason)`` when no beat confirmed the grant (or the process's place in
    line) until ``margin_s`` before it could lapse.
    """

    def __init__(
        self,
        tickets: Callable[[], Mapping[str, Mine]],
        beat: Beat,
        *,
        ttl_s: float,
        every_s: float,
        margin_s: float,
    ) -> None:
        self._tickets = tickets
        self._beat = beat
        self.ttl_s = ttl_s
        self.every_s = every_s
        self.margin_s = margin_s
        self._cond = threading.Condition()
        self._until: float | None = None
        self._lapsed = False
        self._holder_expires: float | None = None
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_answer: Callable[[dict[str, Any], str, str], None] = _ignore
        self._on_expired: Callable[[str], None] = _ignore

    def start(
        self,
        on_answer: Callable[[dict[str, Any], str, str], None],
        on_expired: Callable[[str], None],
    ) -> None:
        """Start both threads (unless they run), reporting to the running event loop."""
        self._loop = asyncio.get_running_loop()  # a guard used on a later loop reports there
        if self._threads and all(thread.is_alive() for thread in self._threads):
            return
        self._threads.clear()
        self._on_answer, self._on_expired = on_answer, on_expired
        for target, name in ((self._beats, "beat"), (self._fence, "fence")):
            thread = threading.Thread(target=target, name=f"gpuguard-redis-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def lapsed(self) -> bool:
        """True from an expiry until the next confirmation (an expiry reported, then undone)."""
        with self._cond:
            return self._lapsed

    def confirm(self, until: float) -> None:
        """Redis keeps this process's grant (or place in line) until ``until`` (monotonic)."""
        with self._cond:
            self._until, self._lapsed = until, False
            self._cond.notify_all()

    def saw(self, state: dict[str, Any], is_mine: Callable[[str], bool]) -> None:
        """A state read from Redis: if another process holds, beat as its grant expires."""
        with self._cond:
            self._holder_seen(state, is_mine)

    def _holder_seen(self, state: dict[str, Any], is_mine: Callable[[str], bool]) -> None:
        h = state["h"]
        others = bool(h) and not is_mine(h["t"])
        self._holder_expires = state["sent"] + state["pttl"] / 1000.0 if others else None
        self._cond.notify_all()

    def poke(self) -> None:
        """Look again: this process's tickets changed."""
        with self._cond:
            self._cond.notify_all()

    async def stop(self) -> None:
        """Stop both threads and wait for them (a beat in flight ends within its timeout)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        self._threads.clear()

    # --- the beating thread --------------------------------------------------------------

    def _beats(self) -> None:
        due: float | None = None
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    tickets = self._tickets()
                    now = time.monotonic()
                    if not tickets:
                        due = None
                        self._cond.wait()
                        continue
                    if due is None:
                        due = now + self.every_s  # its request renewed the process just now
                    wake = due
                    holding = _holding(tickets)
                    if holding is None and self._holder_expires is not None:
                        wake = min(wake, self._holder_expires + 0.001)
                    if now >= wake:
                        break
                    self._cond.wait(wake - now)
            tid, fence, ticket = ("", "", "") if holding is None else holding
            sent = time.monotonic()
            try:
                state = self._beat(tid, fence, ticket)
            except RedisError:
                due = time.monotonic() + RETRY_S  # the fence thread decides when to give up
                continue
            due = sent + self.every_s
            self._answered(state, tid, sent)
            if not self._post(self._on_answer, state, tid, fence):
                return

    def _answered(self, state: dict[str, Any], tid: str, sent: float) -> None:
        with self._cond:
            tickets = self._tickets()
            holding = _holding(tickets)
            if state["r"] == "ok" and (holding[0] if holding else "") == tid:
                self._until, self._lapsed = sent + self.ttl_s, False
            self._holder_seen(state, tickets.__contains__)

    # --- the fencing thread --------------------------------------------------------------

    def _fence(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    left = math.inf
                    if self._until is not None and not self._lapsed and self._tickets():
                        left = self._until - self.margin_s - time.monotonic()
                        if left <= 0:
                            self._lapsed = True
                            break
                    self._cond.wait(None if left == math.inf else left)
            reason = (
                f"Redis did not confirm it for {self.ttl_s - self.margin_s:.2f}s of its "
                f"{self.ttl_s:g}s TTL; fenced before the TTL could lapse"
            )
            if not self._post(self._on_expired, reason):
                return

    def _post(self, callback: Callable[..., None], *args: object) -> bool:
        """Run ``callback(*args)`` in the event loop; False once that loop is closed."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True


def _holding(tickets: Mapping[str, Mine]) -> tuple[str, str, str] | None:
    """The holding ticket among ``tickets``: its id, fence and JSON (for a re-assertion)."""
    for tid, mine in tickets.items():
        if mine.fence is not None:
            return tid, mine.fence, mine.json
    return None


def _ignore(*args: object) -> None:
    """The default callbacks, before :meth:`Heartbeat.start`."""
