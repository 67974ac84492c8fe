"""The Redis scope across real processes, a real Redis, and a Redis that dies.

* many processes hammer one lease; a ledger of GPU intervals proves no overlap, fences that
  rise with every grant, and nothing left behind in Redis;
* a holder killed with SIGKILL frees the GPU within the TTL;
* Redis killed mid-hold: the holder gets LeaseLost (its work stopped), a waiter a clear
  GuardUnavailable; after a restart the next grant carries a larger fence;
* a holder whose grant was taken over learns it at its next heartbeat (LeaseLost);
* a process that releases and exits at once has handed the GPU on (no wait for its TTL).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from gpuguard import GpuGuard, GuardUnavailable, LeaseLost

from .redis_support import REDIS_URL, private_redis, require_redis

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "gpuguard-test-procs"


def worker(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen([sys.executable, "-m", "tests.guard._redis_worker", *args], env=env)


def intervals(ledger: Path) -> list[tuple[int, int, int]]:
    """``(fence, start_ns, end_ns)`` of every hold in the ledger, in start order."""
    starts: dict[int, int] = {}
    spans = []
    for line in ledger.read_text().splitlines():
        kind, fence, at, _pid = line.split()
        if kind == "start":
            starts[int(fence)] = int(at)
        else:
            spans.append((int(fence), starts.pop(int(fence)), int(at)))
    assert starts == {}, "a hold started and never ended"
    return sorted(spans, key=lambda span: span[1])


def leftover_keys(name: str) -> list[str]:
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k.decode() for k in client.scan_iter(match=f"{PREFIX}:{{{name}}}:*")]
    client.delete(*keys) if keys else None
    return sorted(k for k in keys if not k.endswith((":fence", ":seq", ":ver")))


def test_many_processes_never_overlap_and_leave_nothing_behind(tmp_path: Path) -> None:
    require_redis()
    name, ledger = f"hammer-{uuid.uuid4().hex[:8]}", tmp_path / "ledger"
    procs = [worker(REDIS_URL, name, str(ledger), str(seed), "25") for seed in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    spans = intervals(ledger)
    assert len(spans) > 20
    for (f1, _, end1), (f2, start2, _) in itertools.pairwise(spans):
        assert end1 <= start2, "two processes held the GPU at once"
        assert f2 > f1, "fencing tokens must rise with every grant"
    left = leftover_keys(name)
    assert all(k.split(":")[-2] == "client" for k in left), left  # liveness keys expire


async def test_a_killed_holder_frees_the_gpu_within_the_ttl(tmp_path: Path) -> None:
    require_redis()
    name, ledger = f"kill-{uuid.uuid4().hex[:8]}", tmp_path / "ledger"
    holder = worker(REDIS_URL, name, str(ledger), "hold")
    try:
        for _ in range(200):  # bounded readiness poll of the subprocess
            if ledger.exists() and ledger.read_text().startswith("held"):
                break
            await asyncio.sleep(0.05)
        killed_fence = int(ledger.read_text().split()[1])
        guard = GpuGuard.redis(REDIS_URL, name, prefix=PREFIX, ttl_s=1.0)
        try:
            waiting = asyncio.create_task(guard.acquire("next", wait_timeout=1.5))
            await asyncio.sleep(0.1)
            assert guard.snapshot().waiters[0].operation == "next"
            holder.send_signal(signal.SIGKILL)
            lease = await waiting  # within the 1 s TTL (+ the wait before the kill)
            assert lease.fence is not None
            assert lease.fence > killed_fence
            lease.release()
        finally:
            await guard.aclose()
    finally:
        holder.kill()
        holder.wait(5)
    # The killed holder is remembered (for its GPU teardown) until its bound ends, then expires
    # like the liveness keys.
    remembered = redis.Redis.from_url(REDIS_URL).hkeys(f"{PREFIX}:{{{name}}}:holders")
    assert remembered in ([], [b"teardown"]), remembered
    left = leftover_keys(name)
    assert all(k.split(":")[-2] == "client" or k.endswith(":holders") for k in left), left


async def test_redis_killed_mid_hold_loses_the_lease_and_fails_the_waiter(
    tmp_path: Path,
) -> None:
    with private_redis(tmp_path) as server:
        guard = GpuGuard.redis(server.url, "gpu0", ttl_s=1.0)
        other = GpuGuard.redis(server.url, "gpu0", ttl_s=1.0)
        try:
            work_started = asyncio.Event()

            async def gpu_work() -> None:
                work_started.set()
                await asyncio.Event().wait()

            async def hold() -> int | None:
                async with guard.hold("chat") as lease:
                    await lease.run(gpu_work())
                return lease.fence

            holding = asyncio.create_task(hold())
            await work_started.wait()
            waiting = asyncio.create_task(other.acquire("load", wait_timeout=5.0))
            await asyncio.sleep(0.1)
            assert other.queue_length == 1
            server.kill()
            with pytest.raises(LeaseLost) as lost:
                await holding
            assert lost.value.fence is not None
            with pytest.raises(GuardUnavailable):
                await waiting
            server.start()
            lease = await other.acquire("after", wait_timeout=5.0)
            assert lease.fence is not None
            assert lease.fence > lost.value.fence
            lease.release()
        finally:
            await guard.aclose()
            await other.aclose()


async def test_a_holder_whose_grant_was_taken_learns_it_at_its_next_heartbeat() -> None:
    require_redis()
    name = f"taken-{uuid.uuid4().hex[:8]}"
    guard = GpuGuard.redis(REDIS_URL, name, prefix=PREFIX, ttl_s=0.6)
    try:
        work_started = asyncio.Event()

        async def gpu_work() -> None:
            work_started.set()
            await asyncio.Event().wait()

        async def hold() -> None:
            async with guard.hold("embed") as lease:
                await lease.run(gpu_work())

        holding = asyncio.create_task(hold())
        await work_started.wait()
        # Someone else's grant replaces ours (as after an expiry on a stalled host).
        redis.Redis.from_url(REDIS_URL).delete(f"{PREFIX}:{{{name}}}:holders")
        with pytest.raises(LeaseLost, match="gone or taken over"):
            await asyncio.wait_for(holding, 5.0)
        assert guard.current is None
        assert guard.snapshot().counters.failed == 1
    finally:
        await guard.aclose()
    assert all(k.split(":")[-2] == "client" for k in leftover_keys(name))


async def test_a_killed_waiter_is_skipped_when_its_turn_comes(tmp_path: Path) -> None:
    require_redis()
    name, ledger = f"killw-{uuid.uuid4().hex[:8]}", tmp_path / "ledger"
    guard = GpuGuard.redis(REDIS_URL, name, prefix=PREFIX, ttl_s=1.0)
    waiter = None
    try:
        lease = await guard.acquire("holder")
        waiter = worker(REDIS_URL, name, str(ledger), "wait")
        for _ in range(200):  # bounded readiness poll of the subprocess
            if ledger.exists() and "queued" in ledger.read_text():
                break
            await asyncio.sleep(0.05)
        waiter.send_signal(signal.SIGKILL)
        waiter.wait(5)
        await asyncio.sleep(1.2)  # the dead process's liveness (TTL 1 s) runs out
        # Under the TTL: a grant to the dead waiter would hold the GPU a whole TTL.
        after = asyncio.create_task(guard.acquire("after", wait_timeout=0.5))
        await asyncio.sleep(0.05)
        lease.release()
        granted = await after  # the dead interactive waiter is skipped, not waited for
        assert "granted" not in ledger.read_text()
        granted.release()
    finally:
        if waiter is not None:
            waiter.kill()
            waiter.wait(5)
        await guard.aclose()
    assert all(k.split(":")[-2] == "client" for k in leftover_keys(name))


async def test_a_process_that_releases_and_exits_has_handed_the_gpu_on(tmp_path: Path) -> None:
    # The release reaches Redis before release() returns: a script that ends right after
    # it does not leave the GPU held for its lease's 60 s TTL.
    require_redis()
    name, ledger = f"brief-{uuid.uuid4().hex[:8]}", tmp_path / "ledger"
    guard = GpuGuard.redis(REDIS_URL, name, prefix=PREFIX)
    try:
        first = await guard.acquire("first")
        brief = worker(REDIS_URL, name, str(ledger), "brief")
        try:
            for _ in range(200):  # bounded readiness poll of the subprocess
                if ledger.exists() and "queued" in ledger.read_text():
                    break
                await asyncio.sleep(0.05)
            after = asyncio.create_task(guard.acquire("after", wait_timeout=20.0))
            await asyncio.sleep(0.1)
            assert [w.operation for w in guard.snapshot().waiters] == ["brief", "after"]
            first.release()
            assert await asyncio.to_thread(brief.wait, 20) == 0
            lease = await after  # granted when the brief process released, not 60 s later
            assert ledger.read_text().split() == ["queued", "granted"]
            lease.release()
        finally:
            brief.kill()
            brief.wait(5)
    finally:
        await guard.aclose()
    assert all(k.split(":")[-2] == "client" for k in leftover_keys(name))
