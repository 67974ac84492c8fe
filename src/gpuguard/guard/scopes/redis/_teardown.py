"""The Redis lease's side of a dead holder's GPU teardown (the rule: :mod:`.._teardown`).

Redis grants the next waiter once a holder's grant lapses, while the dead holder's GPU
context may still hold memory. Redis keeps that holder (:mod:`._lua_grants`) and every answer
names it (``d``) until its bound ends. A grant to a waiter of this process, on the dead
holder's host, is then taken in Redis (its heartbeat renews it, so nobody else is granted
meanwhile) but reported to the guard only once :class:`~.._teardown.TeardownRule` says it
need not wait: the driver no longer lists the pid, or the bound passed since the grant
lapsed. The driver is asked again every :data:`~.._teardown.POLL_S` on the guard's clock. A
request that would not wait is refused meanwhile. From another host the pid means nothing
here: the grant is reported at once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ...._clock import Clock, TimerHandle
from .._teardown import POLL_S, Teardown, TeardownRule

__all__ = ["HeldBack"]


class HeldBack:
    """The grants of this process that wait for a dead holder's teardown; ``ready`` reports one."""

    def __init__(self, rule: TeardownRule, clock: Clock, ready: Callable[[str], None]) -> None:
        self._rule, self._clock, self._ready = rule, clock, ready
        self._timers: dict[str, TimerHandle] = {}

    def dead_holder(self, state: dict[str, Any]) -> Teardown | None:
        """The dead holder that Redis's answer ``state`` names, if a grant must wait for it.

        Its time of death is the lapse of its grant, on this process's clock.
        """
        raw = state.get("d")
        if not isinstance(raw, dict):  # none (false), or an answer of an older gpuguard
            return None
        now = self._clock.monotonic()
        dead = (int(raw["pid"]), str(raw["host"]), now - float(raw["age"]) / 1000.0)
        return dead if self._rule.waits(dead, now) else None

    def hold_back(self, tid: str, dead: Teardown) -> None:
        """Report grant ``tid`` (``ready``) once ``dead`` no longer holds it back."""
        self._timers[tid] = self._clock.call_later(POLL_S, partial(self._look, tid, dead))

    def cancel(self, tid: str) -> bool:
        """Stop waiting for grant ``tid``; False if it was not held back."""
        timer = self._timers.pop(tid, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def close(self) -> None:
        """Stop every wait (the arbiter is closing)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _look(self, tid: str, dead: Teardown) -> None:
        if self._rule.waits(dead, self._clock.monotonic()):
            self.hold_back(tid, dead)
            return
        del self._timers[tid]
        self._ready(tid)
