"""The guard contract: exclusion, priority, fairness, bounds, watchdog, events, snapshot, logs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from functools import partial

import pytest

from gpuguard import (
    DEFAULT,
    Event,
    EventBus,
    FakeClock,
    GpuStatus,
    GuardError,
    LeaseNotHeld,
    OperationHung,
    Priority,
    QueueFull,
    WaitTimeout,
    WouldBlock,
)

from ._support import MakeGuard, Op, Work, checkpoints, gpu_events, start, statuses, until

# --- exclusion and the uncontended path ------------------------------------------------------


async def test_uncontended_hold_is_granted_at_once_and_reported_as_current(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard()
    assert guard.current is None
    async with guard.hold("chat", model="llama", priority=Priority.INTERACTIVE) as lease:
        assert lease.held
        current = guard.current
        assert current is not None
        assert (current.operation, current.model, current.priority) == (
            "chat",
            "llama",
            Priority.INTERACTIVE,
        )
        assert current.since == clock.monotonic()
        clock.advance(2.5)
        assert guard.current is not None
        assert guard.current.held_s == pytest.approx(2.5)
        assert guard.locked
    assert not lease.held
    assert guard.current is None
    assert not guard.locked


async def test_second_operation_waits_until_the_first_releases(make_guard: MakeGuard) -> None:
    guard = make_guard()
    order: list[str] = []
    a = await start(guard, "a", order)
    b = await start(guard, "b", order)
    assert order == ["a"]
    assert guard.queue_length == 1
    assert a.holding
    assert not b.holding
    a.finish()
    await until(lambda: b.holding)
    assert order == ["a", "b"]
    assert not a.holding
    b.finish()
    await asyncio.gather(a.task, b.task)
    assert guard.current is None


async def test_a_lease_carries_its_grants_fence_on_the_scope_that_issues_them(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    first = await guard.acquire("a")
    second_task = asyncio.create_task(guard.acquire("b"))
    await until(lambda: guard.queue_length == 1)
    first.release()
    second = await second_task
    second.release()
    if guard.scope == "redis":
        assert first.fence is not None
        assert second.fence is not None
        assert second.fence > first.fence
    else:
        assert (first.fence, second.fence) == (None, None)


# --- priority, FIFO, aging -------------------------------------------------------------------


async def test_waiters_are_served_by_priority(make_guard: MakeGuard) -> None:
    guard = make_guard()
    order: list[str] = []
    holder = await start(guard, "holder", order)
    ops = [
        await start(guard, "bulk-embed", order, priority=Priority.BACKGROUND),
        await start(guard, "load", order, priority=Priority.NORMAL),
        await start(guard, "chat", order, priority=Priority.INTERACTIVE),
    ]
    for op in [holder, *sorted(ops, key=lambda o: -o._priority)]:
        op.finish()
        await checkpoints()
    await asyncio.gather(holder.task, *(op.task for op in ops))
    assert order == ["holder", "chat", "load", "bulk-embed"]


@pytest.mark.parametrize("priority", list(Priority))
async def test_fifo_within_a_priority(make_guard: MakeGuard, priority: Priority) -> None:
    guard = make_guard()
    order: list[str] = []
    holder = await start(guard, "holder", order)
    ops = [await start(guard, f"op{i}", order, priority=priority) for i in range(6)]
    holder.finish()
    for op in ops:
        await op.until_holding()
        op.finish()
    await asyncio.gather(holder.task, *(op.task for op in ops))
    assert order == ["holder", *(f"op{i}" for i in range(6))]


def _handed_on(previous: Op, ops: list[Op]) -> bool:
    """The GPU went from ``previous`` to another op, and that op's body runs."""
    return not previous.holding and any(op.holding for op in ops)


async def _serve_stream(guard_aging: float | None, make_guard: MakeGuard, clock: FakeClock) -> int:
    """A background waiter against a never-ending stream of interactive work.

    Returns in which round the background waiter got the GPU (0 if it never did).
    """
    guard = make_guard(aging_s=guard_aging, wait_timeout=None)
    order: list[str] = []
    current = await start(guard, "chat-0", order, priority=Priority.INTERACTIVE)
    bulk = await start(guard, "bulk", order, priority=Priority.BACKGROUND)
    ops = [current]
    for n in range(1, 11):
        # A new interactive request always arrives before the GPU frees.
        ops.append(await start(guard, f"chat-{n}", order, priority=Priority.INTERACTIVE))
        clock.advance(5.0)
        holder = next(op for op in [*ops, bulk] if op.holding)
        holder.finish()
        await until(partial(_handed_on, holder, [*ops, bulk]))
        if bulk.holding:
            served = n
            break
    else:
        served = 0
    for op in [*ops, bulk]:
        op.finish()
    await until(lambda: guard.current is None and guard.queue_length == 0, limit=1000)
    await asyncio.gather(*(op.task for op in [*ops, bulk]))
    return served


async def test_aging_serves_a_background_waiter_despite_a_stream_of_interactive_work(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    # Two aging steps (background -> normal -> interactive) at 10 s each; the waiter then
    # ties with interactive work and wins on arrival order.
    assert await _serve_stream(10.0, make_guard, clock) == 4


async def test_without_aging_the_background_waiter_starves(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    assert await _serve_stream(None, make_guard, clock) == 0


async def test_snapshot_shows_effective_priority_after_aging(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(aging_s=10.0)
    order: list[str] = []
    holder = await start(guard, "holder", order)
    bulk = await start(guard, "bulk", order, priority=Priority.BACKGROUND)
    load = await start(guard, "load", order, priority=Priority.NORMAL)
    assert [w.operation for w in guard.snapshot().waiters] == ["load", "bulk"]
    clock.advance(10.0)
    (first, second) = guard.snapshot().waiters
    assert (first.operation, first.effective_priority) == ("load", Priority.INTERACTIVE)
    assert (second.operation, second.effective_priority) == ("bulk", Priority.NORMAL)
    assert second.priority is Priority.BACKGROUND
    for op in (holder, load, bulk):
        op.finish()
    await asyncio.gather(holder.task, load.task, bulk.task)


# --- the non-blocking path never jumps the queue --------------------------------------------


async def test_try_hold_succeeds_when_free(make_guard: MakeGuard) -> None:
    guard = make_guard()
    async with guard.try_hold("embed-batch", model="minilm") as lease:
        assert lease.held
        assert lease.priority is Priority.BACKGROUND
    assert guard.snapshot().counters.completed == 1


async def test_acquire_nowait_takes_a_free_gpu_and_hands_it_on(make_guard: MakeGuard) -> None:
    guard = make_guard()
    lease = guard.acquire_nowait("embed-batch", model="minilm")
    assert lease.held
    assert guard.current is not None
    assert guard.current.operation == "embed-batch"
    waiter = asyncio.create_task(guard.acquire("chat"))
    await checkpoints()
    assert guard.queue_length == 1
    lease.release()
    # The waiter is granted in the release's own step, on every scope.
    assert guard.current is not None
    assert guard.current.operation == "chat"
    (await waiter).release()
    assert guard.current is None
    assert guard.snapshot().counters.completed == 2


async def test_try_hold_fails_while_the_gpu_is_held(make_guard: MakeGuard) -> None:
    guard = make_guard()
    async with guard.hold("chat"):
        with pytest.raises(WouldBlock) as caught:
            async with guard.try_hold("embed-batch"):
                pytest.fail("try_hold must not be granted while the GPU is held")
        assert caught.value.holder == "chat"
        assert caught.value.operation == "embed-batch"
        with pytest.raises(WouldBlock):
            guard.acquire_nowait("embed-batch")
    assert guard.snapshot().counters.acquired == 1


async def test_try_hold_never_jumps_the_queue(make_guard: MakeGuard) -> None:
    guard = make_guard()
    order: list[str] = []
    holder = await start(guard, "holder", order)
    waiter = await start(guard, "waiter", order, priority=Priority.BACKGROUND)
    with pytest.raises(WouldBlock) as caught:
        guard.acquire_nowait("cpu-or-gpu", priority=Priority.INTERACTIVE)
    assert caught.value.queued == 1
    holder.finish()
    await until(lambda: holder.task.done())
    # The waiter was granted in the same step as the release; even before it runs again,
    # the non-blocking path sees a holder.
    assert guard.current is not None
    assert guard.current.operation == "waiter"
    with pytest.raises(WouldBlock):
        async with guard.try_hold("cpu-or-gpu"):
            pass
    waiter.finish()
    await waiter.task
    async with guard.try_hold("cpu-or-gpu"):
        pass
    assert order == ["holder", "waiter"]


async def test_try_hold_fails_while_a_waiter_is_queued_even_between_holders(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    lease = await guard.acquire("holder")
    order: list[str] = []
    waiter = await start(guard, "waiter", order)
    lease.release()  # hands the GPU straight to the waiter: no gap to slip into
    with pytest.raises(WouldBlock):
        guard.acquire_nowait("sneaky")
    waiter.finish()
    await waiter.task
    assert order == ["waiter"]


# --- bounds: wait timeout, queue, hold timeout ----------------------------------------------


async def test_wait_timeout_names_the_holder(make_guard: MakeGuard, clock: FakeClock) -> None:
    guard = make_guard()
    sub = guard.events.subscribe()
    order: list[str] = []
    holder = await start(guard, "llm-load", order, model="qwen")
    task = asyncio.create_task(guard.acquire("chat", model="qwen", wait_timeout=5.0))
    await checkpoints()
    clock.advance(4.9)
    await checkpoints()
    assert not task.done()
    clock.advance(0.1)
    with pytest.raises(WaitTimeout) as caught:
        await task
    error = caught.value
    assert isinstance(error, GuardError)
    assert (error.operation, error.model, error.holder) == ("chat", "qwen", "llm-load")
    assert error.waited_s == pytest.approx(5.0)
    assert "llm-load" in str(error)
    assert guard.queue_length == 0
    assert holder.holding  # the holder is untouched
    assert statuses(sub)[-2:] == [("chat", "waiting"), ("chat", "timed_out")]
    assert guard.snapshot().counters.timed_out == 1
    holder.finish()
    await holder.task
    assert guard.current is None


async def test_default_wait_timeout_comes_from_the_guard(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(wait_timeout=3.0)
    lease = await guard.acquire("holder")
    task = asyncio.create_task(guard.acquire("waiter", wait_timeout=DEFAULT))
    unlimited = asyncio.create_task(guard.acquire("patient", wait_timeout=None))
    await checkpoints()
    clock.advance(100.0)
    with pytest.raises(WaitTimeout):
        await task
    assert not unlimited.done()
    lease.release()
    (await unlimited).release()


async def test_queue_full_is_a_clear_error_with_retry_after(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(max_waiters=2)
    sub = guard.events.subscribe()
    # Two finished 10-second holds give the retry-after estimate something to go on.
    for _ in range(2):
        async with guard.hold("warmup"):
            clock.advance(10.0)
    order: list[str] = []
    ops = [await start(guard, f"op{i}", order) for i in range(3)]
    gpu_events(sub)
    with pytest.raises(QueueFull) as caught:
        await guard.acquire("one-too-many", model="m")
    error = caught.value
    assert (error.operation, error.model, error.holder) == ("one-too-many", "m", "op0")
    assert error.queue_length == 2
    assert error.retry_after_s == pytest.approx(30.0)  # mean hold 10 s x (2 queued + 1)
    assert "GPU queue full" in str(error)
    (event,) = gpu_events(sub)
    assert (event.status, event.holder) == (GpuStatus.REJECTED, "op0")
    assert guard.snapshot().counters.rejected == 1
    assert guard.queue_length == 2
    for op in ops:
        op.finish()
        await checkpoints()
    await asyncio.gather(*(op.task for op in ops))


async def test_queue_full_retry_after_is_at_least_a_second(make_guard: MakeGuard) -> None:
    guard = make_guard(max_waiters=0)
    async with guard.hold("holder"):
        with pytest.raises(QueueFull) as caught:
            await guard.acquire("waiter")
    assert caught.value.retry_after_s >= 1.0


async def test_a_hung_holder_is_interrupted_and_the_gpu_quarantined_until_it_stops(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=30.0)
    sub = guard.events.subscribe()
    order: list[str] = []
    hung = await start(guard, "prewarm", order, model="big")
    waiter = await start(guard, "chat", order)
    clock.advance(29.0)
    await checkpoints()
    assert hung.holding
    clock.advance(1.0)
    # Hung, but its body has not stopped yet: the GPU stays with it, visibly hung.
    current = guard.current
    assert current is not None
    assert (current.operation, current.hung, current.label) == (
        "prewarm",
        True,
        "prewarm (hung for 0s)",
    )
    assert guard.snapshot().to_dict()["holder"]["hung"] is True
    with pytest.raises(WouldBlock, match=r"held by prewarm \(hung"):
        guard.acquire_nowait("sneaky")
    with pytest.raises(OperationHung) as caught:
        await hung.task
    error = caught.value
    assert (error.operation, error.model) == ("prewarm", "big")
    assert error.held_s == pytest.approx(30.0)
    assert hung.lease is not None
    assert hung.lease.hung
    assert not hung.lease.held
    # Its body has unwound: only now does the GPU pass on.
    await until(lambda: waiter.holding)
    waiter.finish()
    await waiter.task
    assert statuses(sub) == [
        ("prewarm", "started"),
        ("chat", "waiting"),
        ("prewarm", "hung"),
        ("prewarm", "recovered"),
        ("chat", "started"),
        ("chat", "completed"),
    ]
    counters = guard.snapshot().counters
    assert (counters.acquired, counters.hung, counters.completed) == (2, 1, 1)
    assert counters.total_hold_s == pytest.approx(30.0)
    # The guard stays usable.
    async with guard.hold("after"):
        pass
    assert guard.current is None


async def test_waiters_time_out_naming_the_hung_holder(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=10.0)
    stuck = Work()

    async def unstoppable() -> None:
        async with guard.hold("embed") as lease:
            # GPU work with no way to stop it (a thread, say): it runs to its end.
            await lease.run(stuck.run())

    holder = asyncio.create_task(unstoppable())
    await checkpoints()
    waiter = asyncio.create_task(guard.acquire("chat", wait_timeout=15.0))
    await checkpoints()
    clock.advance(10.0)
    await checkpoints()
    clock.advance(5.0)
    with pytest.raises(WaitTimeout, match=r"held by embed \(hung for 5s\)"):
        await waiter
    current = guard.current
    assert current is not None
    assert current.hung_s == pytest.approx(5.0)
    stuck.done.set()
    with pytest.raises(OperationHung):
        await holder
    assert guard.current is None


async def test_on_hang_release_hands_the_gpu_on_at_once(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=30.0, on_hang="release")
    sub = guard.events.subscribe()
    order: list[str] = []
    hung = await start(guard, "prewarm", order)
    waiter = await start(guard, "chat", order)
    clock.advance(30.0)
    # Handed on synchronously, inside the timer callback, before the hung body stopped.
    assert guard.current is not None
    assert guard.current.operation == "chat"
    with pytest.raises(OperationHung):
        await hung.task
    await until(lambda: waiter.holding)
    waiter.finish()
    await waiter.task
    assert statuses(sub)[:4] == [
        ("prewarm", "started"),
        ("chat", "waiting"),
        ("prewarm", "hung"),
        ("prewarm", "recovered"),
    ]


async def test_per_call_hold_timeout_overrides_the_default(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=5.0)
    order: list[str] = []
    patient = await start(guard, "unload", order, hold_timeout=None)
    clock.advance(10_000.0)
    await checkpoints()
    assert patient.holding
    patient.finish()
    await patient.task
    short = await start(guard, "chat", order, hold_timeout=1.0)
    clock.advance(1.0)
    with pytest.raises(OperationHung):
        await short.task
    assert guard.snapshot().counters.hung == 1


async def test_a_hung_holder_with_a_long_timeout_does_not_delay_a_short_one(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    # The watchdog is one timer armed for the earliest deadline: a later lease with an
    # earlier deadline must re-arm it.
    guard = make_guard()
    async with guard.hold("long", hold_timeout=1000.0):
        pass
    order: list[str] = []
    short = await start(guard, "short", order, hold_timeout=2.0)
    clock.advance(2.0)
    with pytest.raises(OperationHung):
        await short.task


async def test_lease_released_twice_raises_lease_not_held(make_guard: MakeGuard) -> None:
    guard = make_guard()
    lease = await guard.acquire("load", model="m")
    lease.release()
    with pytest.raises(LeaseNotHeld) as caught:
        lease.release()
    assert (caught.value.operation, caught.value.model) == ("load", "m")
    assert guard.snapshot().counters.completed == 1


async def test_releasing_a_hung_lease_raises_operation_hung(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard()
    acquired = asyncio.Event()
    outcome: list[str] = []

    async def manual() -> None:
        lease = await guard.acquire("embed", hold_timeout=5.0)
        acquired.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
        try:
            lease.release()
        except OperationHung:
            outcome.append("hung")
        # The guard's cancellation is withdrawn: the task is not left half-cancelled.
        task = asyncio.current_task()
        assert task is not None
        outcome.append(f"cancelling={task.cancelling()}")

    task = asyncio.create_task(manual())
    await acquired.wait()
    clock.advance(5.0)
    await task
    assert outcome == ["cancelled", "hung", "cancelling=0"]


@pytest.mark.parametrize("bad", [-1.0, -0.001, math.nan])
async def test_impossible_timeouts_are_rejected_at_once(make_guard: MakeGuard, bad: float) -> None:
    guard = make_guard()
    with pytest.raises(ValueError, match="wait_timeout"):
        guard.hold("x", wait_timeout=bad)
    with pytest.raises(ValueError, match="hold_timeout"):
        guard.hold("x", hold_timeout=bad)
    with pytest.raises(ValueError, match="hold_timeout"):
        guard.try_hold("x", hold_timeout=bad)
    with pytest.raises(ValueError, match="wait_timeout"):
        await guard.acquire("x", wait_timeout=bad)
    with pytest.raises(ValueError, match="hold_timeout"):
        await guard.acquire("x", hold_timeout=bad)
    async with guard.hold("holder"):
        # Busy or not, an impossible request is a ValueError, not WouldBlock.
        with pytest.raises(ValueError, match="hold_timeout"):
            guard.acquire_nowait("x", hold_timeout=bad)
    with pytest.raises(ValueError, match="wait_timeout"):
        make_guard(wait_timeout=bad)
    with pytest.raises(ValueError, match="hold_timeout"):
        make_guard(hold_timeout=bad)
    assert guard.snapshot().counters.acquired == 1
    assert guard.current is None


async def test_zero_timeouts_are_allowed(make_guard: MakeGuard, clock: FakeClock) -> None:
    guard = make_guard(wait_timeout=0.0)
    async with guard.hold("x", hold_timeout=0.0):
        pass
    async with guard.hold("holder"):
        task = asyncio.create_task(guard.acquire("waiter"))
        await checkpoints()
        clock.advance(0.0)
        with pytest.raises(WaitTimeout):
            await task


# --- events ----------------------------------------------------------------------------------


async def test_events_of_an_uncontended_hold(make_guard: MakeGuard, clock: FakeClock) -> None:
    guard = make_guard(name="gpu7")
    sub = guard.events.subscribe()
    async with guard.hold("chat", model="llama", priority=Priority.INTERACTIVE):
        clock.advance(1.5)
    started, completed = gpu_events(sub)
    for event in (started, completed):
        assert (event.guard, event.operation, event.model) == ("gpu7", "chat", "llama")
        assert event.priority is Priority.INTERACTIVE
        assert event.lease_id == started.lease_id
    assert started.status is GpuStatus.STARTED
    assert (started.waited_s, started.held_s) == (0.0, 0.0)
    assert started.timestamp == clock.time() - 1.5
    assert completed.status is GpuStatus.COMPLETED
    assert completed.held_s == pytest.approx(1.5)
    assert completed.timestamp == clock.time()


async def test_events_of_a_contended_sequence(make_guard: MakeGuard, clock: FakeClock) -> None:
    guard = make_guard()
    sub = guard.events.subscribe()
    order: list[str] = []
    load = await start(guard, "load", order, model="m")
    chat = await start(guard, "chat", order, model="m", fail=True)
    clock.advance(2.0)
    load.finish()
    await until(lambda: chat.holding)
    clock.advance(3.0)
    chat.finish()
    with pytest.raises(RuntimeError):
        await chat.task
    await load.task
    events = gpu_events(sub)
    assert [(e.operation, e.status) for e in events] == [
        ("load", GpuStatus.STARTED),
        ("chat", GpuStatus.WAITING),
        ("load", GpuStatus.COMPLETED),
        ("chat", GpuStatus.STARTED),
        ("chat", GpuStatus.FAILED),
    ]
    waiting = events[1]
    assert (waiting.position, waiting.holder) == (1, "load")
    assert events[2].held_s == pytest.approx(2.0)
    assert events[3].waited_s == pytest.approx(2.0)
    assert events[4].held_s == pytest.approx(3.0)
    assert events[4].waited_s == pytest.approx(2.0)
    assert events[4].detail == "RuntimeError: chat failed"


async def test_waiting_event_reports_queue_position(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sub = guard.events.subscribe()
    order: list[str] = []
    ops = [await start(guard, "holder", order)]
    ops.append(await start(guard, "bg", order, priority=Priority.BACKGROUND))
    ops.append(await start(guard, "normal", order))
    ops.append(await start(guard, "chat", order, priority=Priority.INTERACTIVE))
    waiting = [e for e in gpu_events(sub) if e.status is GpuStatus.WAITING]
    # Positions at the time of asking: each later, higher-priority request goes ahead.
    assert [(e.operation, e.position, e.holder) for e in waiting] == [
        ("bg", 1, "holder"),
        ("normal", 1, "holder"),
        ("chat", 1, "holder"),
    ]
    assert [(w.operation, w.position) for w in guard.snapshot().waiters] == [
        ("chat", 1),
        ("normal", 2),
        ("bg", 3),
    ]
    for op in ops:
        op.finish()
    await asyncio.gather(*(op.task for op in ops))


async def test_event_serialises_to_json(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sub = guard.events.subscribe()
    async with guard.hold("chat", model="llama"):
        pass
    event = gpu_events(sub)[0]
    data = json.loads(event.to_json())
    assert {k: data[k] for k in ("operation", "model", "status")} == {
        "operation": "chat",
        "model": "llama",
        "status": "started",
    }
    for key in ("guard", "timestamp", "waited_s", "held_s", "detail", "lease_id", "priority"):
        assert key in data
    assert data["priority"] == "normal"
    assert event.to_dict() == data


async def test_history_matches_what_subscribers_saw(make_guard: MakeGuard) -> None:
    guard = make_guard()
    async with guard.hold("before"):  # nobody subscribed: only the history keeps these
        pass
    sub = guard.events.subscribe()
    async with guard.hold("after"):
        pass
    history = guard.events.history()
    assert [(e.to_dict()["operation"], e.to_dict()["status"]) for e in history] == [
        ("before", "started"),
        ("before", "completed"),
        ("after", "started"),
        ("after", "completed"),
    ]
    assert history[2:] == sub.drain()
    assert guard.events.history() == history  # built once, the same objects each time
    assert guard.events.history(kinds={"job"}) == []


async def test_a_slow_subscriber_never_blocks_the_guard(make_guard: MakeGuard) -> None:
    bus = EventBus(history_size=0)
    guard = make_guard(events=bus)
    slow = bus.subscribe(maxsize=3)
    fast = bus.subscribe()
    for i in range(5):
        async with guard.hold(f"op{i}"):
            pass
    assert slow.dropped == 7
    assert bus.dropped == 7
    assert [(e.to_dict()["operation"], e.to_dict()["status"]) for e in slow.drain()] == [
        ("op3", "completed"),
        ("op4", "started"),
        ("op4", "completed"),
    ]
    assert len(fast.drain()) == 10
    assert guard.snapshot().dropped_events == 7
    assert guard.snapshot().counters.completed == 5


async def test_a_bus_without_history_or_subscribers_keeps_nothing(make_guard: MakeGuard) -> None:
    bus = EventBus(history_size=0)
    guard = make_guard(events=bus)
    async with guard.hold("quiet"):
        pass
    assert bus.history() == []
    with bus.subscribe() as sub:
        async with guard.hold("heard"):
            pass
        assert statuses(sub) == [("heard", "started"), ("heard", "completed")]


async def test_listeners_see_every_event_synchronously(make_guard: MakeGuard) -> None:
    guard = make_guard()
    seen: list[str] = []

    def listener(event: Event) -> None:
        seen.append(event.to_dict()["status"])

    def broken(event: Event) -> None:
        raise RuntimeError("a listener that fails never fails the guard")

    guard.events.add_listener(broken)
    guard.events.add_listener(listener)
    async with guard.hold("chat"):
        assert seen == ["started"]
    assert seen == ["started", "completed"]
    guard.events.remove_listener(listener)
    async with guard.hold("chat"):
        pass
    assert seen == ["started", "completed"]


# --- snapshot --------------------------------------------------------------------------------


async def test_snapshot_contents(make_guard: MakeGuard, clock: FakeClock, scope: str) -> None:
    guard = make_guard(name="gpu0", max_waiters=8)
    policy = "budget" if scope.endswith("-budget") else "exclusive"
    order: list[str] = []
    holder = await start(guard, "load", order, model="qwen")
    clock.advance(1.0)
    bg = await start(guard, "bulk", order, priority=Priority.BACKGROUND, model="minilm")
    clock.advance(1.0)
    chat1 = await start(guard, "chat1", order, priority=Priority.INTERACTIVE)
    chat2 = await start(guard, "chat2", order, priority=Priority.INTERACTIVE)
    clock.advance(1.0)

    snap = guard.snapshot()
    assert (snap.guard, snap.policy, snap.max_waiters) == ("gpu0", policy, 8)
    assert snap.holder is not None
    assert (snap.holder.operation, snap.holder.model) == ("load", "qwen")
    assert snap.holder.held_s == pytest.approx(3.0)
    assert [(w.operation, w.position, w.priority) for w in snap.waiters] == [
        ("chat1", 1, Priority.INTERACTIVE),
        ("chat2", 2, Priority.INTERACTIVE),
        ("bulk", 3, Priority.BACKGROUND),
    ]
    assert snap.waiters[2].waited_s == pytest.approx(2.0)
    assert snap.waiters[2].model == "minilm"
    assert snap.queue_length == 3
    by_priority = snap.waiters_by_priority
    assert [w.operation for w in by_priority[Priority.INTERACTIVE]] == ["chat1", "chat2"]
    assert by_priority[Priority.NORMAL] == ()
    assert [w.operation for w in by_priority[Priority.BACKGROUND]] == ["bulk"]
    assert snap.counters.acquired == 1
    assert snap.taken_at == clock.time()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.guard = "other"  # type: ignore[misc]
    json.dumps(snap.to_dict())

    for op in (holder, chat1, chat2, bg):
        op.finish()
        await checkpoints()
    await asyncio.gather(holder.task, chat1.task, chat2.task, bg.task)
    counters = guard.snapshot().counters
    assert (counters.acquired, counters.waited, counters.completed) == (4, 3, 4)
    # chat1 and chat2 waited 1 s, bulk 2 s; the three handoffs happened at the same instant.
    assert counters.total_wait_s == pytest.approx(4.0)
    assert counters.total_hold_s == pytest.approx(3.0)
    assert guard.snapshot().holder is None
    assert guard.snapshot().waiters == ()


async def test_snapshot_counts_every_outcome(make_guard: MakeGuard, clock: FakeClock) -> None:
    guard = make_guard(max_waiters=1)
    async with guard.hold("ok"):
        pass
    with pytest.raises(KeyError):
        async with guard.hold("boom"):
            raise KeyError("x")
    order: list[str] = []
    holder = await start(guard, "holder", order, hold_timeout=10.0)
    timed_out = asyncio.create_task(guard.acquire("impatient", wait_timeout=1.0))
    await checkpoints()
    with pytest.raises(QueueFull):
        await guard.acquire("rejected")
    clock.advance(1.0)
    with pytest.raises(WaitTimeout):
        await timed_out
    abandoned = asyncio.create_task(guard.acquire("abandoned"))
    await checkpoints()
    abandoned.cancel()
    await checkpoints()
    clock.advance(9.0)
    with pytest.raises(OperationHung):
        await holder.task
    c = guard.snapshot().counters
    assert (c.acquired, c.completed, c.failed, c.hung) == (3, 1, 1, 1)
    assert (c.timed_out, c.rejected, c.abandoned, c.cancelled) == (1, 1, 1, 0)
    assert c.acquired == c.completed + c.failed + c.cancelled + c.hung


# --- logging ---------------------------------------------------------------------------------


async def test_every_transition_is_logged_in_order(
    make_guard: MakeGuard, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    guard = make_guard()
    caplog.set_level(logging.INFO, logger="gpuguard.guard")
    order: list[str] = []
    load = await start(guard, "load", order, model="qwen")
    chat = await start(guard, "chat", order, model="qwen", priority=Priority.INTERACTIVE)
    clock.advance(2.0)
    load.finish()
    await until(lambda: chat.holding)
    clock.advance(1.0)
    chat.finish()
    await asyncio.gather(load.task, chat.task)
    messages = [r.getMessage() for r in caplog.records if r.name == "gpuguard.guard"]
    assert [m.split(":")[0] for m in messages] == [
        "acquired",
        "waiting",
        "released",
        "acquired",
        "released",
    ]
    assert [m.split("op=")[1].split()[0] for m in messages] == [
        "load",
        "chat",
        "load",
        "chat",
        "chat",
    ]
    assert all("model=qwen" in m for m in messages)
    assert "held=2.000s" in messages[2]
    assert "waited=2.000s" in messages[3]
    assert "held=1.000s" in messages[4]
    assert "holder=load" in messages[1]


async def test_failures_and_hangs_log_at_warning_and_error(
    make_guard: MakeGuard, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    guard = make_guard(hold_timeout=1.0)
    caplog.set_level(logging.INFO, logger="gpuguard.guard")
    with pytest.raises(ValueError, match="bad"):
        async with guard.hold("fails"):
            raise ValueError("bad")
    order: list[str] = []
    hung = await start(guard, "hangs", order)
    clock.advance(1.0)
    with pytest.raises(OperationHung):
        await hung.task
    levels = [(r.getMessage().split(":")[0], r.levelno) for r in caplog.records]
    assert ("released", logging.WARNING) in levels
    assert ("hung", logging.ERROR) in levels


async def test_repr_names_the_holder(make_guard: MakeGuard) -> None:
    guard = make_guard(name="gpu0")
    async with guard.hold("chat") as lease:
        assert "chat" in repr(guard)
        assert "held" in repr(lease)


async def test_background_grants_and_releases_log_at_debug(
    make_guard: MakeGuard, caplog: pytest.LogCaptureFixture
) -> None:
    # One pair per bulk embedding batch would drown the log at INFO.
    guard = make_guard()
    caplog.set_level(logging.DEBUG, logger="gpuguard.guard")
    async with guard.hold("bulk", priority=Priority.BACKGROUND):
        pass
    async with guard.hold("load"):
        pass
    levels = [(r.getMessage().split(":")[0], r.levelno) for r in caplog.records]
    assert levels == [
        ("acquired", logging.DEBUG),
        ("released", logging.DEBUG),
        ("acquired", logging.INFO),
        ("released", logging.INFO),
    ]
