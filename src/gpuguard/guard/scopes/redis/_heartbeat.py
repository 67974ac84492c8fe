"""The Redis scope's heartbeat, in threads of its own: renewals no event loop can starve.

While this process has tickets, a thread beats every ``every_s`` on a connection of its own:
a holder renews the TTL of each of its grants in one call (Redis answers ``lost`` with those
that are gone or taken over, renews the others, and re-asserts grants that Redis forgot with
all its data), a waiter renews its process's liveness key. A waiter also beats as another
process's grant is due to expire, so that Redis grants the next waiter when a holder died.
A blocking call on the event loop, a GIL-releasing thread or a slow loop does not delay a
beat.

Each answered beat *confirms* the grants until ``sent + ttl`` by this host's clock (Redis
renewed it no earlier than it was sent). A second thread, the fence, watches that deadline:
``margin_s`` before it, unless a later beat confirmed more, it reports ``on_expired`` once,
so the holder stops its work before its TTL can lapse by its own clock and Redis hand the
GPU on. Answers and expiries are handed to the event loop with ``call_soon_threadsafe``.

The event loop wakes a thread only when that thread must look before the time it is already
waiting for (a nearer deadline, a first ticket): each answer, grant or request otherwise
leaves both threads asleep. On a busy machine waking a thread costs the loop a context
switch, on the hand-off path, for a thread that would only go back to sleep.

The threads read the arbiter's tickets through ``tickets()``, which returns a copy taken in
one step (``dict.copy`` under the GIL); they never change them.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from redis.exceptions import RedisError

from ._mirror import grants
from ._view import Mine

__all__ = ["RETRY_S", "Heartbeat", "Held"]

RETRY_S: Final = 0.05
"""Pause before a beat that failed (no answer, connection refused) is tried again."""

Held = tuple[str, str, str]
"""A grant of this process: its ticket's Redis id, fence and JSON (for a re-assertion)."""

Beat = Callable[[Sequence[Held]], dict[str, Any]]
"""``beat(grants)`` for this process's grants (none: a waiter's beat): Redis's answer."""


class Heartbeat:
    """The beating and fencing threads of one arbiter (see the module docstring).

    ``on_answer(state, grants)`` runs in the loop for every answered beat (``grants``: those
    it renewed),
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
        self._beat_at = self._fence_at = -math.inf
        """When each thread looks next, as it waits (inf: only when woken; -inf: not waiting)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_answer: Callable[[dict[str, Any], Sequence[Held]], None] = _ignore
        self._on_expired: Callable[[str], None] = _ignore

    def start(
        self,
        on_answer: Callable[[dict[str, Any], Sequence[Held]], None],
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

    def confirm(self, until: float, *, lower_only: bool = False) -> None:
        """Redis keeps this process's grant (or place in line) until ``until`` (monotonic).

        ``lower_only``: the grants held already were not renewed by it; it may only bring
        the deadline closer.
        """
        with self._cond:
            if lower_only and self._until is not None and not self._lapsed:
                until = min(until, self._until)
            self._until, self._lapsed = until, False
            self._wake(fence_at=until - self.margin_s)

    def saw(self, state: dict[str, Any], is_mine: Callable[[str], bool]) -> None:
        """A state read from Redis: if another process holds, beat as its first grant expires."""
        with self._cond:
            self._holder_seen(state, is_mine)

    def _holder_seen(self, state: dict[str, Any], is_mine: Callable[[str], bool]) -> None:
        others = [h["pttl"] for h in grants(state) if not is_mine(h["t"])]
        self._holder_expires = state["sent"] + min(others) / 1000.0 if others else None
        self._wake(beat_at=self._beat_for_holder())

    def poke(self) -> None:
        """Look again: this process's tickets changed (a thread without them waits unbounded)."""
        with self._cond:
            if math.inf in (self._beat_at, self._fence_at):
                self._cond.notify_all()
            else:
                self._wake(beat_at=self._beat_for_holder())

    def _beat_for_holder(self) -> float:
        """When a waiter beats for another process's grant (lock held): as it is due to expire."""
        return math.inf if self._holder_expires is None else self._holder_expires + 0.001

    def _wake(self, *, beat_at: float = math.inf, fence_at: float = math.inf) -> None:
        """Wake the threads (lock held) if one must look before the time it waits for."""
        if beat_at < self._beat_at or fence_at < self._fence_at:
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
                        self._wait_beat(math.inf)
                        continue
                    if due is None:
                        due = now + self.every_s  # its request renewed the process just now
                    wake = due
                    holding = _holding(tickets)
                    waiting = len(holding) < len(tickets)
                    if waiting:
                        wake = min(wake, self._beat_for_holder())
                    if now >= wake:
                        break
                    self._wait_beat(wake)
            sent = time.monotonic()
            try:
                state = self._beat(holding)
            except RedisError:
                due = time.monotonic() + RETRY_S  # the fence thread decides when to give up
                continue
            due = sent + self.every_s
            self._answered(state, holding, sent)
            if not self._post(self._on_answer, state, holding):
                return

    def _wait_beat(self, until: float) -> None:
        """Sleep (lock held) until ``until`` (monotonic; inf: until woken), or woken earlier."""
        self._beat_at = until
        self._cond.wait(None if until == math.inf else max(0.0, until - time.monotonic()))
        self._beat_at = -math.inf

    def _answered(self, state: dict[str, Any], renewed: Sequence[Held], sent: float) -> None:
        """Confirm until ``sent + ttl`` if the beat named every grant still held here."""
        with self._cond:
            tickets = self._tickets()
            lost = set(state["x"].split()) if state["r"] == "lost" else set()
            held = {tid for tid, _, _ in _holding(tickets)} - lost
            if held <= {tid for tid, _, _ in renewed}:
                self._until, self._lapsed = sent + self.ttl_s, False
                self._wake(fence_at=self._until - self.margin_s)
            self._holder_seen(state, tickets.__contains__)

    # --- the fencing thread --------------------------------------------------------------

    def _fence(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    self._fence_at = math.inf
                    if self._until is not None and not self._lapsed and self._tickets():
                        self._fence_at = self._until - self.margin_s
                        if self._fence_at <= time.monotonic():
                            self._lapsed = True
                            break
                    left = self._fence_at - time.monotonic()
                    self._cond.wait(None if left == math.inf else left)
                    self._fence_at = -math.inf
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


def _holding(tickets: Mapping[str, Mine]) -> list[Held]:
    """The holding tickets among ``tickets``: id, fence and JSON of each."""
    return [(tid, m.fence, m.json) for tid, m in tickets.items() if m.fence is not None]


def _ignore(*args: object) -> None:
    """The default callbacks, before :meth:`Heartbeat.start`."""
