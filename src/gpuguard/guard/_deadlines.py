"""Hold timeouts: one timer per guard for every lease it holds, not one per lease.

A grant records its deadline; the guard's single timer is armed for the earliest one and is
re-armed only when a grant's deadline comes sooner (a shorter ``hold_timeout``) or the grant
runs on another event loop than the timer (a guard used by a later ``asyncio.run``). A lease
that ends only drops its deadline: the timer stays armed, and when it fires it times out the
leases that are due and re-arms itself for the next deadline, if any. An uncontended hold so
costs a dict insert and a pop instead of scheduling and cancelling a loop timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .._clock import Clock, TimerHandle
from ._lease import Lease
from ._queue import DUE_EPSILON

__all__ = ["HoldDeadlines"]


class HoldDeadlines:
    """The hold deadlines of one guard's leases, and the one timer that enforces them.

    ``on_due`` is called (in the event loop) for each lease still recorded once its
    deadline has passed, in grant order.
    """

    def __init__(self, clock: Clock, on_due: Callable[[Lease], None]) -> None:
        self._clock = clock
        self._on_due = on_due
        self._deadlines: dict[Lease, float] = {}
        self._timer: TimerHandle | None = None
        self._armed_for = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, lease: Lease, deadline: float) -> None:
        """``lease`` was granted and must end (or hang) by ``deadline``."""
        self._deadlines[lease] = deadline
        loop = _running_loop()
        if self._timer is None or deadline < self._armed_for or loop is not self._loop:
            self._arm(deadline, loop)

    def discard(self, lease: Lease) -> None:
        """``lease`` ended (or hung): its deadline no longer counts."""
        self._deadlines.pop(lease, None)

    def _arm(self, deadline: float, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = max(0.0, deadline - self._clock.monotonic())
        # Granted to synchronous code (acquire_nowait outside an event loop), the clock has
        # no loop to run the timer on: the next grant in a loop arms it.
        with contextlib.suppress(RuntimeError):
            self._timer = self._clock.call_later(delay, self._fire)
            self._armed_for, self._loop = deadline, loop

    def _fire(self) -> None:
        self._timer = None
        now = self._clock.monotonic()
        due = [lease for lease, at in self._deadlines.items() if at <= now + DUE_EPSILON]
        for lease in due:
            del self._deadlines[lease]
        for lease in due:
            self._on_due(lease)
        if self._deadlines and self._timer is None:
            self._arm(min(self._deadlines.values()), _running_loop())


# The running loop, or None outside one (asyncio's own non-raising form: read on every grant).
_running_loop = asyncio._get_running_loop
