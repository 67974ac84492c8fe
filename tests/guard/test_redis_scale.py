"""The Redis scope's cost per hold does not grow with the line.

A private ``redis-server`` (so nobody else's commands are counted) and one guard per waiting
process-like client (each its own connections, client id and channel). ``INFO commandstats``
counts every command Redis ran, those the lease script runs included: the commands one
hand-off costs must be the same with 2 waiters as with 16.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis

from gpuguard import GpuGuard
from gpuguard.guard.scopes.redis import RedisArbiter

from .redis_support import private_redis

TTL_S = 60.0  # no heartbeat falls inside the measured hand-offs (they beat every ttl/5)


def commands_run(client: redis.Redis[bytes]) -> int:
    """Every command Redis has run since it started, less the ``INFO`` calls themselves."""
    stats = client.info("commandstats")
    total = sum(int(row["calls"]) for row in stats.values())
    info = int(stats.get("cmdstat_info", {}).get("calls", 0))
    return total - info


async def commands_per_hand_off(url: str, waiters: int) -> float:
    """Commands Redis runs per hand-off while ``waiters`` clients wait in line."""
    arbiters = [
        RedisArbiter.from_url(url, "gpu0", prefix="scale", ttl_s=TTL_S) for _ in range(waiters + 1)
    ]
    guards = [GpuGuard(arbiter=arbiter) for arbiter in arbiters]
    stats = redis.Redis.from_url(url)
    try:
        lease = await guards[0].acquire("first")
        asking = []
        for place, (guard, arbiter) in enumerate(zip(guards[1:], arbiters[1:], strict=True)):
            asking.append(asyncio.create_task(guard.acquire("next", wait_timeout=30.0)))
            for _ in range(10_000):  # bounded: its request goes out within a few steps
                if guard.queue_length > place:
                    break
                await asyncio.sleep(0)
            await arbiter.settle()  # Redis queued it: the line is in this order
        for arbiter in arbiters:
            await arbiter.settle()
        before = commands_run(stats)
        for task in asking:
            lease.release()
            lease = await task
        for arbiter in arbiters:
            await arbiter.settle()
        spent = commands_run(stats) - before
        lease.release()
        return spent / waiters
    finally:
        for guard in guards:
            await guard.aclose()
        stats.close()


async def test_a_hand_off_costs_as_many_commands_with_16_waiters_as_with_2(
    tmp_path: Path,
) -> None:
    with private_redis(tmp_path) as server:
        few = await commands_per_hand_off(server.url, 2)
        many = await commands_per_hand_off(server.url, 16)
    # Bounded, whatever the length of the line (settling adds one marker per client).
    assert few < 45, few
    assert many <= few + 2, (few, many)


async def test_a_line_longer_than_an_answer_shows_keeps_every_place(tmp_path: Path) -> None:
    # An answer lists the first 32 waiters only; the count and this process's own places
    # still come whole, so none of its waiters beyond the 32nd is taken for gone.
    with private_redis(tmp_path) as server:
        holder = GpuGuard(arbiter=RedisArbiter.from_url(server.url, "gpu0", ttl_s=TTL_S))
        arbiter = RedisArbiter.from_url(server.url, "gpu0", ttl_s=TTL_S)
        waiting = GpuGuard(arbiter=arbiter)
        try:
            lease = await holder.acquire("first")
            asking = []
            for place in range(40):
                asking.append(asyncio.create_task(waiting.acquire(f"w{place}", wait_timeout=30)))
                for _ in range(10_000):  # bounded: its request goes out within a few steps
                    if waiting.queue_length > place:
                        break
                    await asyncio.sleep(0)
                await arbiter.settle()
            await arbiter.settle()
            assert waiting.queue_length == 40
            shown = [w.operation for w in waiting.snapshot().waiters]
            assert shown == [f"w{place}" for place in range(40)]
            lease.release()  # the holder's answer counts every waiter, shows the first 32
            assert holder.queue_length == 39
            assert len(holder.snapshot().waiters) == 32
            for place, task in enumerate(asking):
                granted = await task
                assert granted.operation == f"w{place}"
                granted.release()
        finally:
            await holder.aclose()
            await waiting.aclose()
