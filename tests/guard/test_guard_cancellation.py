"""Cancellation safety: one regression test per order of events.

The invariant: whatever order cancellation arrives in, the lease is never leaked, the queue
never stalls, and the outcome is reported exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from gpuguard import FakeClock, GpuStatus, OperationHung, WaitTimeout

from ._support import MakeGuard, checkpoints, gpu_events, start, statuses, until


async def test_cancelled_while_waiting(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sub = guard.events.subscribe()
    order: list[str] = []
    holder = await start(guard, "holder", order)
    waiter = await start(guard, "waiter", order)
    assert guard.queue_length == 1
    waiter.task.cancel()
    await checkpoints()
    assert waiter.task.cancelled()
    assert guard.queue_length == 0
    assert guard.snapshot().waiters == ()
    holder.finish()
    await holder.task
    assert guard.current is None
    async with guard.hold("next"):  # not stalled
        pass
    events = gpu_events(sub)
    assert [(e.operation, e.status) for e in events] == [
        ("holder", GpuStatus.STARTED),
        ("waiter", GpuStatus.WAITING),
        ("waiter", GpuStatus.CANCELLED),
        ("holder", GpuStatus.COMPLETED),
        ("next", GpuStatus.STARTED),
        ("next", GpuStatus.COMPLETED),
    ]
    assert events[2].detail == "cancelled while waiting"
    counters = guard.snapshot().counters
    assert (counters.abandoned, counters.cancelled, counters.acquired) == (1, 0, 2)


async def test_cancelled_while_waiting_then_released_before_it_ran(
    make_guard: MakeGuard,
) -> None:
    # The cancellation is pending (the task has not run yet) when the GPU frees: the release
    # must skip the cancelled waiter and serve the next one, not grant a dead task.
    guard = make_guard()
    lease = await guard.acquire("holder")
    order: list[str] = []
    doomed = await start(guard, "doomed", order)
    after = await start(guard, "after", order)
    doomed.task.cancel()
    lease.release()
    await until(lambda: after.holding)
    assert doomed.task.cancelled()
    after.finish()
    await after.task
    assert order == ["after"]
    assert guard.current is None
    assert guard.queue_length == 0
    counters = guard.snapshot().counters
    assert (counters.abandoned, counters.acquired, counters.completed) == (1, 2, 2)


async def test_cancelled_after_being_granted_before_it_resumed(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sub = guard.events.subscribe()
    lease = await guard.acquire("holder")
    order: list[str] = []
    granted = await start(guard, "granted", order)
    after = await start(guard, "after", order)
    lease.release()  # grants "granted" in this very step...
    assert guard.current is not None
    assert guard.current.operation == "granted"
    granted.task.cancel()  # ...and it is cancelled before it ever runs
    await until(lambda: after.holding)
    assert granted.task.cancelled()
    assert order == ["after"]  # the cancelled one's body never ran
    after.finish()
    await after.task
    assert guard.current is None
    events = gpu_events(sub)
    assert [(e.operation, e.status) for e in events][-5:] == [
        ("holder", GpuStatus.COMPLETED),
        ("granted", GpuStatus.STARTED),
        ("granted", GpuStatus.CANCELLED),
        ("after", GpuStatus.STARTED),
        ("after", GpuStatus.COMPLETED),
    ]
    assert events[-3].detail == "cancelled before it could start"
    counters = guard.snapshot().counters
    assert (counters.acquired, counters.cancelled, counters.completed) == (3, 1, 2)


async def test_cancelled_while_holding(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sub = guard.events.subscribe()
    order: list[str] = []
    holder = await start(guard, "holder", order)
    waiter = await start(guard, "waiter", order)
    holder.task.cancel()
    await until(lambda: waiter.holding)
    assert holder.task.cancelled()
    waiter.finish()
    await waiter.task
    assert statuses(sub) == [
        ("holder", "started"),
        ("waiter", "waiting"),
        ("holder", "cancelled"),
        ("waiter", "started"),
        ("waiter", "completed"),
    ]
    counters = guard.snapshot().counters
    assert (counters.acquired, counters.cancelled, counters.completed) == (2, 1, 1)


async def test_generator_exit_from_a_streaming_generator_counts_as_cancelled(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    sub = guard.events.subscribe()

    async def stream() -> AsyncGenerator[str, None]:
        async with guard.hold("chat", model="llama"):
            for token in ["Hel", "lo", "!"]:
                yield token

    tokens = stream()
    assert await anext(tokens) == "Hel"
    assert guard.current is not None
    await tokens.aclose()  # the client went away mid-stream
    assert guard.current is None
    events = gpu_events(sub)
    assert [e.status for e in events] == [GpuStatus.STARTED, GpuStatus.CANCELLED]
    assert events[1].detail == "cancelled while holding the GPU"
    assert guard.snapshot().counters.cancelled == 1
    async with guard.hold("next"):
        pass


async def test_hung_after_being_granted_before_it_resumed(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    # Granted, then past its hold timeout before its task ran: the guard's own cancellation
    # must surface as OperationHung, not as a CancelledError nobody asked for.
    guard = make_guard(hold_timeout=5.0)
    lease = await guard.acquire("holder", hold_timeout=None)
    order: list[str] = []
    slow = await start(guard, "slow", order)
    after = await start(guard, "after", order)
    lease.release()
    clock.advance(5.0)
    assert guard.current is not None
    assert (guard.current.operation, guard.current.hung) == ("slow", True)
    with pytest.raises(OperationHung):
        await slow.task
    assert guard.current is not None
    assert guard.current.operation == "after"
    assert not slow.task.cancelled()
    assert order == ["after"]
    after.finish()
    await after.task
    counters = guard.snapshot().counters
    assert (counters.acquired, counters.hung, counters.completed) == (3, 1, 2)


async def test_hung_holder_cancelled_from_outside_too_stays_cancelled(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=5.0)
    order: list[str] = []
    holder = await start(guard, "holder", order)
    clock.advance(5.0)  # the watchdog cancels it...
    holder.task.cancel()  # ...and so does its caller
    await checkpoints()
    assert holder.task.cancelled()  # the caller's cancellation wins
    assert guard.current is None
    assert guard.snapshot().counters.hung == 1


async def test_hung_body_that_finished_before_the_cancellation_reached_it(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    # The body itself moves the clock past its hold timeout and returns without awaiting:
    # the watchdog's cancellation is still pending. It must not leak out of the
    # ``async with`` into the caller's next await.
    guard = make_guard(hold_timeout=5.0)

    async def body() -> str:
        with pytest.raises(OperationHung):
            async with guard.hold("self-timed"):
                clock.advance(6.0)
        await checkpoints()  # would raise CancelledError if the cancellation leaked
        task = asyncio.current_task()
        assert task is not None
        return f"cancelling={task.cancelling()}"

    assert await asyncio.create_task(body()) == "cancelling=0"
    assert guard.current is None


async def test_wait_timeout_racing_a_cancellation(make_guard: MakeGuard, clock: FakeClock) -> None:
    guard = make_guard()
    lease = await guard.acquire("holder")
    waiter = asyncio.create_task(guard.acquire("waiter", wait_timeout=1.0))
    await checkpoints()
    clock.advance(1.0)  # the timeout fires first...
    waiter.cancel()  # ...and the caller cancels before the waiter ran
    await checkpoints()
    assert waiter.cancelled()
    assert guard.queue_length == 0
    counters = guard.snapshot().counters
    assert (counters.timed_out, counters.abandoned) == (1, 0)
    lease.release()
    assert guard.current is None


async def test_release_racing_a_wait_timeout(make_guard: MakeGuard, clock: FakeClock) -> None:
    # Released (and so granted) in the same instant the wait timeout falls due: the grant
    # wins, the timer must not also time the waiter out.
    guard = make_guard()
    lease = await guard.acquire("holder")
    waiter = asyncio.create_task(guard.acquire("waiter", wait_timeout=1.0))
    await checkpoints()
    lease.release()
    clock.advance(1.0)
    granted = await waiter
    assert granted.held
    granted.release()
    assert guard.snapshot().counters.timed_out == 0


async def test_task_group_cancellation_releases_everything(make_guard: MakeGuard) -> None:
    guard = make_guard()
    order: list[str] = []
    started = asyncio.Event()

    async def worker(name: str) -> None:
        async with guard.hold(name):
            order.append(name)
            started.set()
            await asyncio.Event().wait()

    async def failing() -> None:
        await started.wait()
        raise WaitTimeout(operation="x", model=None, holder="w0", waited_s=0.0)

    async def run_group() -> None:
        async with asyncio.TaskGroup() as group:
            for i in range(4):
                group.create_task(worker(f"w{i}"))
            group.create_task(failing())

    with pytest.raises(ExceptionGroup):
        await run_group()
    assert order == ["w0"]
    assert guard.current is None
    assert guard.queue_length == 0
    counters = guard.snapshot().counters
    assert (counters.cancelled, counters.abandoned) == (1, 3)
