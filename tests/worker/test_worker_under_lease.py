"""A worker's stream under a lease, with a real child process: its read-ahead is GPU work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

import pytest

from gpuguard import FakeClock, GpuGuard, OperationHung
from gpuguard.worker import WorkerProcess

ENGINE = "tests.worker.engines:build"
BOUND_S = 30.0
"""Bound on the child's round trips on a loaded 2-core machine (fail, never hang)."""


async def test_a_hang_while_the_reader_stalls_stops_the_worker_before_the_gpu_passes_on(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    guard = GpuGuard(hold_timeout=10.0, clock=clock)
    worker = WorkerProcess(ENGINE, name="llm", max_in_flight=4)
    closed = tmp_path / "closed"

    async def answer() -> AsyncGenerator[int, None]:
        async with guard.hold("chat") as lease:
            tokens = worker.stream("count_until_closed", str(closed))
            async with aclosing(lease.stream(tokens)) as chunks:
                async for token in chunks:
                    yield token

    seen: list[bool] = []

    async def next_holder() -> None:
        async with guard.hold("embed"):
            seen.append(closed.exists())

    stream = answer()
    try:
        assert await asyncio.wait_for(anext(stream), BOUND_S) == 0
        # The reader stalls here, while the child generates into its window.
        waiter = asyncio.create_task(next_holder())
        await asyncio.sleep(0)
        clock.advance(10.0)
        await asyncio.wait_for(waiter, BOUND_S)
        assert seen == [True], "the GPU passed on while the worker still generated"
        with pytest.raises(OperationHung):
            await anext(stream)
    finally:
        with contextlib.suppress(OperationHung):
            await stream.aclose()
        await worker.kill()
