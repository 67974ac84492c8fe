"""A request of the Redis scope joins with one script call.

The ``enqueue`` call grants at once when the request may hold now (nobody waits and it fits),
else queues it; its answer carries the place in line and the holder for the ``waiting``
event. No ``acquire`` goes first. Each test uses its own prefix and lease name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gpuguard import GpuGuard, GpuStatus
from gpuguard.guard.scopes.redis import RedisArbiter

from ._support import gpu_events
from .redis_support import guard_pair

PREFIX = "gpuguard-test-join"
TTL_S = 60.0  # no beat falls inside a test


@pytest.fixture
async def pair() -> AsyncIterator[tuple[GpuGuard, GpuGuard, RedisArbiter]]:
    """Two guards of one lease with their own client ids (as two processes); the second's
    arbiter."""
    async with guard_pair(PREFIX, TTL_S) as guards:
        yield guards


def spy_ops(arbiter: RedisArbiter) -> list[str]:
    """Every script call ``arbiter`` makes from now on, on either connection."""
    ops: list[str] = []
    link = arbiter._link  # the test looks at what goes to Redis
    call, call_now = link.call, link.call_now

    async def spied(op: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        ops.append(op)
        return await call(op, *args, **kwargs)

    def spied_now(op: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        ops.append(op)
        return call_now(op, *args, **kwargs)

    link.call = spied  # type: ignore[method-assign]
    link.call_now = spied_now  # type: ignore[method-assign]
    return ops


async def test_a_request_that_must_wait_joins_with_one_script_call(
    pair: tuple[GpuGuard, GpuGuard, RedisArbiter],
) -> None:
    first, second, b = pair
    lease = await first.acquire("load")
    sub = second.events.subscribe()
    ops = spy_ops(b)
    hold = second.hold("chat")
    assert await hold.reserve()  # queued
    assert ops == ["enqueue"]
    (waiting,) = gpu_events(sub)
    assert (waiting.status, waiting.position) == (GpuStatus.WAITING, 1)
    assert waiting.holder is not None
    assert "load" in waiting.holder
    lease.release()
    async with hold as granted:
        assert granted.fence is not None
    assert second.snapshot().counters.waited == 1


async def test_a_request_granted_at_once_is_one_script_call_and_never_waits(
    pair: tuple[GpuGuard, GpuGuard, RedisArbiter],
) -> None:
    _, second, b = pair
    sub = second.events.subscribe()
    ops = spy_ops(b)
    hold = second.hold("chat")
    assert not await hold.reserve()  # granted at once
    assert ops == ["enqueue"]
    async with hold as lease:
        assert lease.fence is not None
    assert [e.status for e in gpu_events(sub)] == [GpuStatus.STARTED, GpuStatus.COMPLETED]
    assert second.snapshot().counters.waited == 0
