"""Fencing tokens checked: work under a fence older than the newest seen never reaches the GPU."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gpuguard import GpuGuard, LeaseLost, StaleFence
from gpuguard.guard import FenceBook

from ._support import MakeGuard


def test_an_older_fence_is_refused_and_an_equal_or_newer_one_passes() -> None:
    book = FenceBook("gpu0")
    book.admit(7, operation="chat")
    book.admit(7, operation="chat")  # the same holder again
    with pytest.raises(StaleFence) as refused:
        book.admit(6, operation="embed", model="m")
    error = refused.value
    assert (error.gpu, error.fence, error.newest, error.operation) == ("gpu0", 6, 7, "embed")
    assert isinstance(error, LeaseLost)
    assert "refused" in str(error)
    assert "newer" in str(error)
    assert "taken over" in str(error)
    book.admit(9, operation="chat")
    assert book.newest == 9
    with pytest.raises(StaleFence):
        book.admit(7, operation="chat")  # once newer was seen, the old one stays refused


@pytest.mark.parametrize("scope", ["redis"])  # the scope whose grants carry fences
async def test_work_of_a_lease_taken_over_is_refused_before_it_starts(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    started: list[str] = []

    async def work(name: str) -> str:
        started.append(name)
        return name

    async with guard.hold("embed") as lease:
        assert lease.fence is not None
        assert await lease.run(work("before")) == "before"
        # A newer holder's work reached this GPU (gpuguard serve admits its X-GPU-Fence).
        guard.fences.admit(lease.fence + 1, operation="chat")
        with pytest.raises(StaleFence) as refused:
            await lease.run(work("after"))
        assert refused.value.fence == lease.fence
        assert refused.value.newest == lease.fence + 1
    assert started == ["before"], "work under a stale fence was started"


@pytest.mark.parametrize("scope", ["redis"])
async def test_a_stream_under_a_lease_taken_over_stops_at_its_next_step(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    steps: list[int] = []
    closed: list[bool] = []

    async def tokens() -> AsyncIterator[int]:
        try:
            for step in range(3):
                steps.append(step)
                yield step
        finally:
            closed.append(True)

    async with guard.hold("chat") as lease:
        assert lease.fence is not None
        chunks = lease.stream(tokens())
        assert await anext(chunks) == 0
        guard.fences.admit(lease.fence + 1, operation="chat")
        with pytest.raises(StaleFence):
            await anext(chunks)
    assert steps == [0], "the stream ran a step under a stale fence"
    assert closed == [True], "the stale stream was left open"


@pytest.mark.parametrize("scope", ["redis"])
async def test_an_equal_or_newer_fence_runs_and_becomes_the_newest(make_guard: MakeGuard) -> None:
    guard = make_guard()

    async def work() -> int:
        return 1

    async with guard.hold("load") as first:
        assert first.fence is not None
        guard.fences.admit(first.fence, operation="chat")  # the same grant, seen at a server
        assert await first.run(work()) == 1
    async with guard.hold("chat") as second:
        assert second.fence is not None
        assert second.fence > first.fence
        assert await second.run(work()) == 1
    assert guard.fences.newest == second.fence


async def test_a_scope_without_fences_is_not_fenced() -> None:
    guard = GpuGuard()
    guard.fences.admit(10**12, operation="chat")

    async def work() -> int:
        return 1

    async with guard.hold("chat") as lease:
        assert lease.fence is None
        assert await lease.run(work()) == 1
