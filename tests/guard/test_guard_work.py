"""GPU work never outlives its lease: tracked work, repeated cancels, hung streams, event loops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from gpuguard import FakeClock, GpuGuard, LeaseNotHeld, OperationHung
from gpuguard.guard._work import run_to_end

from ._support import MakeGuard, Work, checkpoints, until


async def test_run_to_end_waits_for_the_work_through_repeated_cancels() -> None:
    work = Work()
    work.stoppable = False
    caller = asyncio.create_task(run_to_end(work.run(), stop=work.stop))
    await checkpoints()
    for _ in range(3):
        caller.cancel()
        await checkpoints()
        assert not caller.done(), "returned while its work still ran"
    assert work.stops == 1
    work.done.set()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_lease_is_held_until_cancelled_work_has_ended(make_guard: MakeGuard) -> None:
    guard = make_guard()
    work = Work()
    work.stoppable = False

    async def embed() -> None:
        async with guard.hold("embed") as lease:
            await lease.run(work.run(), stop=work.stop)

    task = asyncio.create_task(embed())
    await until(lambda: guard.locked)
    task.cancel()
    await checkpoints()
    task.cancel()  # a second cancel (a job cancelled twice, a server shutting down)
    await checkpoints()
    assert guard.locked, "the GPU was handed on while the encode still ran"
    assert work.stops == 0, "a client that went away is no reason to kill the work"
    work.done.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert guard.current is None
    assert guard.snapshot().counters.cancelled == 1


async def test_hung_work_is_stopped_then_the_gpu_passes_on(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=5.0)
    work = Work()
    work.stoppable = False
    outcome: list[str] = []

    async def embed() -> None:
        async with guard.hold("embed") as lease:
            try:
                await lease.run(work.run(), stop=work.stop)
            except OperationHung:
                outcome.append("hung")
                raise

    task = asyncio.create_task(embed())
    await until(lambda: guard.locked)
    waiter = asyncio.create_task(guard.acquire("chat"))
    await checkpoints()
    clock.advance(5.0)
    await checkpoints()
    assert work.stops == 1
    current = guard.current
    assert current is not None
    assert (current.operation, current.hung) == ("embed", True)  # quarantined
    work.done.set()
    with pytest.raises(OperationHung):
        await task
    assert outcome == ["hung"]
    lease = await waiter
    assert lease.operation == "chat"
    lease.release()
    task_obj = task
    assert task_obj.cancelling() == 0  # the guard's interruption was withdrawn


async def test_stoppable_hung_work_frees_the_gpu_as_soon_as_it_stops(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=5.0)
    work = Work()

    async def embed() -> None:
        async with guard.hold("embed") as lease:
            await lease.run(work.run(), stop=work.stop)

    task = asyncio.create_task(embed())
    await until(lambda: guard.locked)
    clock.advance(5.0)
    with pytest.raises(OperationHung):
        await task
    assert work.stops == 1
    assert guard.current is None


async def test_a_hung_stream_is_stopped_in_whichever_task_resumes_it(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    # A streamed answer: the lease is taken by the task that reads the first chunk, the rest
    # is read by another task (Starlette's response task). The hang must stop the stream's
    # work in the reading task and leave the first task alone.
    guard = make_guard(hold_timeout=10.0)
    stall = Work()
    stall.stoppable = True

    async def tokens() -> AsyncIterator[str]:
        yield "first"
        await stall.run()
        yield "never"

    async def answer() -> AsyncGenerator[str, None]:
        async with guard.hold("chat") as lease:
            async for token in lease.stream(tokens(), stop=stall.stop):
                yield token

    stream = answer()
    first = await anext(stream)  # the request task takes the lease
    assert first == "first"
    request_task = asyncio.current_task()
    assert request_task is not None
    errors: list[BaseException] = []

    async def respond() -> None:
        try:
            async for _ in stream:
                pass
        except BaseException as exc:
            errors.append(exc)

    responder = asyncio.create_task(respond())
    await checkpoints()
    clock.advance(10.0)
    await responder
    assert [type(e) for e in errors] == [OperationHung]
    assert stall.stops == 1
    assert request_task.cancelling() == 0, "the guard cancelled the wrong task"
    assert guard.current is None
    await stream.aclose()


async def test_a_stalled_stream_is_closed_at_hang_then_the_gpu_passes_on(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=10.0)
    closed: list[str] = []

    async def tokens() -> AsyncIterator[str]:
        try:
            yield "a"
            yield "b"
        finally:
            closed.append("tokens")

    async def answer() -> AsyncIterator[str]:
        async with guard.hold("chat") as lease:
            async for token in lease.stream(tokens()):
                yield token

    stream = answer()
    assert await anext(stream) == "a"  # then the reader stalls; the producer may run ahead
    clock.advance(10.0)
    await until(lambda: guard.current is None)
    assert closed == ["tokens"], "the GPU passed on before the stream was closed"
    with pytest.raises(OperationHung):
        await anext(stream)


async def test_run_refuses_work_on_a_released_lease(make_guard: MakeGuard) -> None:
    guard = make_guard()
    lease = await guard.acquire("embed")
    lease.release()
    work = Work()
    with pytest.raises(LeaseNotHeld):
        await lease.run(work.run())


def test_a_guard_reused_on_a_second_event_loop_still_detects_hangs() -> None:
    # Real clock: the defect lived in timers bound to the event loop they were armed on.
    guard = GpuGuard(hold_timeout=0.05)

    async def first_loop() -> None:
        async with guard.hold("quick"):
            pass

    async def second_loop() -> type[BaseException] | None:
        try:
            async with guard.hold("stuck"):
                await asyncio.wait_for(asyncio.Event().wait(), timeout=5.0)
        except (OperationHung, TimeoutError) as exc:
            return type(exc)
        return None

    asyncio.run(first_loop())
    assert asyncio.run(second_loop()) is OperationHung
