"""Hold timeouts enforced by one timer per guard: on time, whatever ended before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gpuguard import FakeClock, GpuEvent, GpuGuard, GpuStatus, Lease
from gpuguard._clock import TimerHandle
from gpuguard.guard._options import DEFAULT, Timeout


class CountingClock(FakeClock):
    """A fake clock that counts the timers the guard schedules."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduled = 0

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        self.scheduled += 1
        return super().call_later(delay, callback)


def _hung(guard: GpuGuard) -> list[str]:
    return [
        e.operation
        for e in guard.events.history()
        if isinstance(e, GpuEvent) and e.status is GpuStatus.HUNG
    ]


async def _acquired(guard: GpuGuard, operation: str, hold_timeout: Timeout = DEFAULT) -> Lease:
    """A lease taken by a task that has ended: a hang interrupts no running task."""
    return await asyncio.create_task(guard.acquire(operation, hold_timeout=hold_timeout))


async def test_uncontended_holds_share_one_timer() -> None:
    clock = CountingClock()
    guard = GpuGuard(clock=clock, hold_timeout=60.0)
    for _ in range(100):
        async with guard.hold("step"):
            clock.advance(0.1)
    assert clock.scheduled == 1
    assert clock.pending_timers == 1


async def test_a_later_lease_times_out_at_its_own_deadline() -> None:
    clock = FakeClock()
    guard = GpuGuard(clock=clock, hold_timeout=10.0, on_hang="release")
    first = await _acquired(guard, "first")
    clock.advance(4.0)
    first.release()  # the timer stays armed for the first lease's deadline (t=10)
    second = await _acquired(guard, "second")  # due at t=14
    clock.advance(6.0)  # t=10: the timer fires, finds nothing due, re-arms
    assert second.held
    assert _hung(guard) == []
    clock.advance(3.9)
    assert second.held
    clock.advance(0.1)  # t=14
    assert second.hung
    assert _hung(guard) == ["second"]


async def test_a_shorter_hold_timeout_is_not_held_up_by_a_longer_one() -> None:
    clock = FakeClock()
    guard = GpuGuard(clock=clock, hold_timeout=100.0, on_hang="release")
    long = await _acquired(guard, "long")
    long.release()
    short = await _acquired(guard, "short", hold_timeout=5.0)
    clock.advance(5.0)
    assert short.hung
    assert _hung(guard) == ["short"]


async def test_a_lease_that_ended_is_never_timed_out() -> None:
    clock = FakeClock()
    guard = GpuGuard(clock=clock, hold_timeout=10.0)
    lease = await guard.acquire("brief")
    lease.release()
    clock.advance(20.0)
    assert _hung(guard) == []
    assert clock.pending_timers == 0  # fired, found nothing due, not re-armed
