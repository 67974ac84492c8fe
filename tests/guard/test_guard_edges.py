"""The lease at its edges: synchronous callers, honest hang reports, streams that run ahead of
their reader, and leases nobody will ever use (a reservation given up, a task that is gone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from gpuguard import FakeClock, GpuGuard, OperationHung, Priority

from ._support import MakeGuard, Work, checkpoints, until


@pytest.mark.parametrize("scope", ["in-process", "host"])
def test_acquire_nowait_works_outside_an_event_loop(scope: str, tmp_path: Path) -> None:
    # Synchronous code (a script, a thread) with the real clock: no loop, no task.
    guard = GpuGuard() if scope == "in-process" else GpuGuard.host(lock_dir=tmp_path)
    lease = guard.acquire_nowait("embed", model="minilm")
    assert lease.held
    assert guard.current is not None
    assert guard.current.operation == "embed"
    lease.release()
    assert guard.current is None


async def test_operation_hung_says_how_long_the_gpu_was_really_held(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    guard = make_guard(hold_timeout=1.0)
    work = Work()
    work.stoppable = False  # it takes a while to stop, as a real engine does

    async def embed() -> None:
        async with guard.hold("embed") as lease:
            await lease.run(work.run(), stop=work.stop)

    task = asyncio.create_task(embed())
    await until(lambda: guard.locked)
    clock.advance(1.0)  # hung: its work is asked to stop
    await checkpoints()
    clock.advance(5.2)  # ... and ends 5.2 s later
    work.done.set()
    with pytest.raises(OperationHung, match=r"held the GPU for 6\.200s") as caught:
        await task
    assert caught.value.held_s == pytest.approx(6.2)


class RunAhead:
    """A producer that runs ahead of its reader, as a worker process fills its window.

    It stops only when closed, and its close takes until :attr:`let_close` is set.
    """

    def __init__(self) -> None:
        self.let_close = asyncio.Event()
        self.closing = False
        self.closed = False
        self.stops = 0

    async def tokens(self) -> AsyncIterator[str]:
        try:
            while True:
                yield "token"
        finally:
            self.closing = True
            await self.let_close.wait()
            self.closed = True

    def stop(self) -> None:
        self.stops += 1


@pytest.fixture
async def producer() -> AsyncIterator[RunAhead]:
    made = RunAhead()
    yield made
    made.let_close.set()  # a test that failed half-way must not hang the loop's shutdown


async def test_a_stream_running_ahead_of_a_stalled_reader_is_stopped_before_the_gpu_passes_on(
    make_guard: MakeGuard, clock: FakeClock, producer: RunAhead
) -> None:
    guard = make_guard(hold_timeout=10.0)

    async def answer() -> AsyncIterator[str]:
        async with guard.hold("chat") as lease:
            async for token in lease.stream(producer.tokens(), stop=producer.stop):
                yield token

    stream = answer()
    assert await anext(stream) == "token"  # then the reader stalls; the producer runs on
    waiter = asyncio.create_task(guard.acquire("embed", priority=Priority.INTERACTIVE))
    await checkpoints()
    clock.advance(10.0)
    await until(lambda: producer.closing)
    assert producer.stops == 1  # hung work is asked to stop, then closed
    await checkpoints()
    current = guard.current
    assert current is not None
    assert (current.operation, current.hung) == ("chat", True), "handed on while it generates"
    assert not waiter.done()
    producer.let_close.set()
    lease = await waiter
    assert producer.closed
    lease.release()
    with pytest.raises(OperationHung):
        await anext(stream)  # the reader comes back: the stream is over


async def test_a_reader_that_leaves_while_its_stream_closes_leaves_the_gpu_quarantined(
    make_guard: MakeGuard, clock: FakeClock, producer: RunAhead
) -> None:
    guard = make_guard(hold_timeout=10.0)

    async def answer() -> AsyncGenerator[str, None]:
        async with guard.hold("chat") as lease:
            async for token in lease.stream(producer.tokens()):
                yield token

    stream = answer()
    assert await anext(stream) == "token"
    clock.advance(10.0)
    await until(lambda: producer.closing)
    with pytest.raises(OperationHung):
        await stream.aclose()  # the client goes away meanwhile
    await checkpoints()
    current = guard.current
    assert current is not None
    assert current.hung, "the GPU passed on before the producer had stopped"
    producer.let_close.set()
    await until(lambda: guard.current is None)
    assert producer.closed


async def test_a_stream_its_body_left_open_is_closed_before_the_gpu_passes_on(
    make_guard: MakeGuard, producer: RunAhead
) -> None:
    guard = make_guard()
    seen: list[bool] = []

    async def first_token() -> None:
        async with guard.hold("chat") as lease:
            async for _ in lease.stream(producer.tokens()):
                break  # leaves the stream open; its producer may run on

    async def next_holder() -> None:
        async with guard.hold("embed"):
            seen.append(producer.closed)

    reader = asyncio.create_task(first_token())
    await until(lambda: producer.closing)
    waiter = asyncio.create_task(next_holder())
    await checkpoints()
    assert not waiter.done()
    producer.let_close.set()
    await reader
    await waiter
    assert seen == [True]


async def test_a_reservation_given_up_before_entering_leaves_the_line(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    holder = await guard.acquire("load")
    hold = guard.hold("chat", priority=Priority.INTERACTIVE)
    assert await hold.reserve()  # queued: "Waiting for GPU..."
    assert guard.queue_length == 1
    await hold.aclose()  # the stream that reserved it was closed
    await checkpoints()
    assert guard.queue_length == 0
    holder.release()
    await checkpoints()
    assert guard.current is None, "a reservation nobody will use was granted"
    with pytest.raises(RuntimeError, match="given up"):
        async with hold:
            pass


async def test_a_granted_reservation_given_up_hands_the_gpu_on(make_guard: MakeGuard) -> None:
    guard = make_guard()
    hold = guard.hold("chat")
    assert not await hold.reserve()  # granted at once
    await hold.aclose()
    assert guard.current is None


async def test_a_hung_lease_whose_task_has_ended_ends_its_quarantine(
    make_guard: MakeGuard, clock: FakeClock
) -> None:
    # A ghost: reserved in a task that then ended, without ever entering its hold.
    guard = make_guard(hold_timeout=10.0)
    holder = await guard.acquire("load")

    async def reserve_and_leave() -> None:
        await guard.hold("chat").reserve()

    await asyncio.create_task(reserve_and_leave())
    holder.release()
    await until(lambda: guard.current is not None and guard.current.operation == "chat")
    waiter = asyncio.create_task(guard.acquire("embed"))
    await checkpoints()
    clock.advance(10.0)  # hung, with nobody left to release it
    lease = await asyncio.wait_for(waiter, 5.0)  # bounded: fail, never hang the suite
    assert lease.operation == "embed"
    lease.release()
