"""Clocks: the guard reads time and schedules timeouts only through one of these.

Injecting a :class:`FakeClock` makes every timeout in the guard deterministic: tests move
time forward with :meth:`FakeClock.advance` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "TimerHandle"]


class TimerHandle(Protocol):
    """A scheduled callback that can be cancelled before it runs."""

    def cancel(self) -> None:
        """Stop the callback from running; harmless if it already ran."""


class Clock(Protocol):
    """Monotonic time, wall time and one-shot timers."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; used for every duration."""

    def time(self) -> float:
        """Seconds since the epoch; used only to stamp events."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (in the event loop's thread) after ``delay`` seconds."""


class SystemClock:
    """The running event loop's clock and timers."""

    def monotonic(self) -> float:
        """``time.monotonic()``, the clock asyncio's event loop schedules its timers on.

        Read directly rather than through ``loop.time()``: it is read on every hold and
        release. A loop whose clock lags it (uvloop caches time per iteration) can only fire
        a timer a little early, and the guard re-checks deadlines when a timer fires.
        """
        return time.monotonic()

    def time(self) -> float:
        """Wall-clock time."""
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Schedule ``callback`` on the running loop."""
        return asyncio.get_running_loop().call_later(delay, callback)

    def __repr__(self) -> str:
        return "SystemClock()"


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told to: for deterministic tests of timeouts.

    Timers fire synchronously inside :meth:`advance`, in deadline order (ties in the order
    they were scheduled); the tasks they wake run at the caller's next checkpoint.
    """

    def __init__(self, start: float = 1000.0, *, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        """The fake time."""
        return self._now

    def time(self) -> float:
        """The fake time shifted to look like wall-clock time."""
        return self._now + self._wall_offset

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Schedule ``callback`` to run when the fake time reaches now + ``delay``."""
        timer = _FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.deadline, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing each timer that falls due on the way."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, deadline)
            timer.callback()
        self._now = target

    @property
    def pending_timers(self) -> int:
        """How many timers are scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f}, pending_timers={self.pending_timers})"
