"""Many random concurrent operations, driven deterministically on a FakeClock.

Each example starts operations with random priorities, bodies (complete, raise, outlive the
hold timeout), wait timeouts and outside cancellations, then moves the fake clock and yields
a random number of checkpoints between steps, so that releases, grants, timeouts, the
watchdog and cancellations interleave in many orders. Nothing sleeps for real time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuguard import (
    FakeClock,
    GpuEvent,
    GpuGuard,
    GpuStatus,
    Lease,
    OperationHung,
    Priority,
    QueueFull,
    WaitTimeout,
    WouldBlock,
)

from ._support import MakeGuard, checkpoints

HOLD_TIMEOUT = 10.0

Body = Literal["complete", "raise", "hang"]


class Boom(Exception):
    """The failure a random body raises."""


@dataclass(frozen=True)
class Plan:
    """One random operation."""

    arrival: int  # the step at which it asks for the GPU
    priority: Priority
    nowait: bool  # try_hold instead of hold
    body: Body
    work_s: float  # fake seconds the body works (hang: far past the hold timeout)
    wait_timeout: float | None
    cancel_at: int | None  # the step at which its caller cancels it, if any


plans = st.builds(
    Plan,
    arrival=st.integers(0, 8),
    priority=st.sampled_from(Priority),
    nowait=st.sampled_from([False, False, False, True]),
    body=st.sampled_from(["complete", "complete", "raise", "hang"]),
    work_s=st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0, 8.0]),
    wait_timeout=st.none() | st.sampled_from([0.0, 1.0, 3.0, 6.0]),
    cancel_at=st.none() | st.integers(0, 12),
)


class Run:
    """Drives one example and records what every body observed."""

    def __init__(self, guard: GpuGuard, clock: FakeClock) -> None:
        self.guard = guard
        self.clock = clock
        self.leases: list[Lease] = []
        self.violations: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self.requests = 0
        self.cancel_requested: set[str] = set()

    def check_exclusive(self, lease: Lease, where: str) -> None:
        """Whenever a body runs, its lease is the one and only lease held."""
        held = [other for other in self.leases if other.held]
        if not lease.held or held != [lease]:
            self.violations.append(f"{where}: {lease!r} runs while held={held!r}")
        current = self.guard.current
        if current is None or current.lease_id != lease.lease_id:
            self.violations.append(f"{where}: current={current!r} but {lease!r} runs")

    async def work(self, seconds: float) -> None:
        """Be busy for ``seconds`` of fake time."""
        done = asyncio.get_running_loop().create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        timer = self.clock.call_later(seconds, finish)
        try:
            await done
        finally:
            timer.cancel()

    async def operation(self, plan: Plan, name: str) -> None:
        self.requests += 1
        hold = (
            self.guard.try_hold(name, priority=plan.priority)
            if plan.nowait
            else self.guard.hold(name, priority=plan.priority, wait_timeout=plan.wait_timeout)
        )
        busy = self.guard.locked or self.guard.queue_length > 0
        try:
            async with hold as lease:
                if plan.nowait and busy:
                    self.violations.append(f"{name}: try_hold jumped the queue")
                self.leases.append(lease)
                self.check_exclusive(lease, f"{name} start")
                await self.work(plan.work_s if plan.body != "hang" else 10 * HOLD_TIMEOUT)
                self.check_exclusive(lease, f"{name} end")
                if plan.body == "raise":
                    raise Boom(name)
            self.outcomes["completed"] += 1
        except Boom:
            self.outcomes["failed"] += 1
        except OperationHung:
            self.outcomes["hung"] += 1
        except WaitTimeout:
            self.outcomes["timed_out"] += 1
        except QueueFull:
            self.outcomes["rejected"] += 1
        except WouldBlock:
            if not busy:
                self.violations.append(f"{name}: try_hold refused a free GPU")
            self.outcomes["would_block"] += 1
        except asyncio.CancelledError:
            if name not in self.cancel_requested:
                # The guard's own cancellation (watchdog) must surface as OperationHung.
                self.violations.append(f"{name}: CancelledError though its caller never cancelled")
            self.outcomes["cancelled"] += 1
            raise


def check_event_stream(events: list[GpuEvent]) -> None:
    """Starts never overlap, and every request ends exactly once."""
    holding: int | None = None
    started: set[int] = set()
    ended: Counter[int] = Counter()
    for event in events:
        lease_id, status = event.lease_id, event.status
        if status is GpuStatus.STARTED:
            assert holding is None, f"{event} while lease {holding} holds"
            holding = lease_id
            started.add(lease_id)
        elif status in (GpuStatus.COMPLETED, GpuStatus.FAILED, GpuStatus.HUNG):
            assert holding == lease_id, f"{event} but lease {holding} holds"
            holding = None
            ended[lease_id] += 1
        elif status is GpuStatus.CANCELLED:
            if lease_id in started:
                assert holding == lease_id, f"{event} but lease {holding} holds"
                holding = None
            ended[lease_id] += 1
        elif status in (GpuStatus.TIMED_OUT, GpuStatus.REJECTED):
            assert lease_id not in started
            ended[lease_id] += 1
    assert holding is None
    assert all(n == 1 for n in ended.values()), ended


SCHEDULES = {
    "operations": st.lists(plans, min_size=1, max_size=10),
    "steps": st.lists(
        st.tuples(st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.0, 12.0]), st.integers(0, 4)),
        min_size=13,
        max_size=13,
    ),
    "max_waiters": st.integers(1, 6),
    "aging_s": st.none() | st.sampled_from([2.0, 5.0]),
}


def examples(n: int) -> settings:
    """Hypothesis settings for ``n`` random schedules."""
    return settings(
        max_examples=n,
        deadline=None,
        # make_guard is a stateless factory; each example builds its own clock and guard.
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


@examples(400)
@given(**SCHEDULES)
@pytest.mark.parametrize("scope", ["in-process", "host"])
async def test_random_operations_keep_the_contract(
    make_guard: MakeGuard,
    operations: list[Plan],
    steps: list[tuple[float, int]],
    max_waiters: int,
    aging_s: float | None,
) -> None:
    await check_random_operations(make_guard, operations, steps, max_waiters, aging_s)


# The same schedules and checks over Redis. Every checkpoint there waits for round trips to
# Redis, so a schedule costs up to a few seconds: fewer of them keep the suite's time bounded.
@examples(100)
@given(**SCHEDULES)
@pytest.mark.parametrize("scope", ["redis"])
async def test_random_operations_keep_the_contract_over_redis(
    make_guard: MakeGuard,
    operations: list[Plan],
    steps: list[tuple[float, int]],
    max_waiters: int,
    aging_s: float | None,
) -> None:
    await check_random_operations(make_guard, operations, steps, max_waiters, aging_s)


async def check_random_operations(
    make_guard: MakeGuard,
    operations: list[Plan],
    steps: list[tuple[float, int]],
    max_waiters: int,
    aging_s: float | None,
) -> None:
    """Run one random schedule, then check every rule of the contract."""
    clock = FakeClock()
    guard = make_guard(
        clock=clock,
        hold_timeout=HOLD_TIMEOUT,
        wait_timeout=None,
        max_waiters=max_waiters,
        aging_s=aging_s,
    )
    subscription = guard.events.subscribe(maxsize=10_000)
    run = Run(guard, clock)
    tasks: dict[int, asyncio.Task[None]] = {}

    for step, (advance_s, n_checkpoints) in enumerate(steps):
        for i, plan in enumerate(operations):
            if plan.arrival == step:
                tasks[i] = asyncio.create_task(run.operation(plan, f"op{i}"))
        await checkpoints(n_checkpoints)
        for i, plan in enumerate(operations):
            if plan.cancel_at == step and i in tasks:
                run.cancel_requested.add(f"op{i}")
                tasks[i].cancel()
        await checkpoints(n_checkpoints)
        assert sum(lease.held for lease in run.leases) <= 1
        clock.advance(advance_s)
        assert sum(lease.held for lease in run.leases) <= 1

    # Let everything finish: at most one body at a time, each bounded by the hold timeout.
    for _ in range(500):
        if all(task.done() for task in tasks.values()):
            break
        await checkpoints(3)
        clock.advance(1.0)
    assert all(task.done() for task in tasks.values())
    await asyncio.gather(*tasks.values(), return_exceptions=True)

    assert run.violations == []
    assert guard.current is None
    assert guard.queue_length == 0
    snapshot = guard.snapshot()
    assert snapshot.waiters == ()
    c = snapshot.counters
    outcomes = run.outcomes
    assert outcomes.total() == run.requests
    # Every granted lease ended exactly one way...
    assert c.acquired == c.completed + c.failed + c.cancelled + c.hung
    assert c.acquired >= len(run.leases)  # granted ones cancelled or hung before they ran
    # ...and every request that was let in ended in exactly one counter.
    assert run.requests - outcomes["would_block"] == (
        c.acquired + c.timed_out + c.rejected + c.abandoned
    )
    assert (c.completed, c.failed, c.rejected) == (
        outcomes["completed"],
        outcomes["failed"],
        outcomes["rejected"],
    )
    # A caller may cancel an operation the guard already timed out or declared hung (the
    # cancellation reaches the task first); otherwise a cancellation is counted as one.
    assert outcomes["timed_out"] <= c.timed_out
    assert outcomes["hung"] <= c.hung
    assert outcomes["cancelled"] == (
        c.cancelled
        + c.abandoned
        + (c.timed_out - outcomes["timed_out"])
        + (c.hung - outcomes["hung"])
    )
    assert c.waited <= c.acquired
    events = [e for e in subscription.drain() if isinstance(e, GpuEvent)]
    check_event_stream(events)
    assert sum(e.status is GpuStatus.STARTED for e in events) == c.acquired
