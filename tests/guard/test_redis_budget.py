"""The Redis lease under the budget policy: one ledger in Redis, several holders at once.

Guards here are separate Redis clients (each its own client id, as separate processes are),
on one fake 80-GiB GPU with 1 GiB kept free; the cross-process test runs real processes that
write to a ledger file. Each test uses its own key prefix and removes its keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from gpuguard import FakeClock, GpuGuard, LeaseLost, StaleFence
from gpuguard.devices import FakeDevices
from gpuguard.guard import FenceBook
from gpuguard.guard.policies import Budget, choose_policy
from gpuguard.guard.scopes.redis import RedisArbiter
from gpuguard.settings import load_settings

from ._support import SETTLERS, checkpoints, start, until
from .redis_support import REDIS_URL, delete_keys, private_redis, redis_arbiter, require_redis

GIB = 1024**3
ROOT = Path(__file__).resolve().parents[2]


class Guards:
    """Budget guards over one Redis lease (one prefix per test, removed afterwards)."""

    def __init__(self, gpu: FakeDevices) -> None:
        self.gpu = gpu
        self.prefix = f"gpuguard-test-{uuid.uuid4().hex[:10]}"
        self.clock = FakeClock()
        self.arbiters: list[RedisArbiter] = []
        self.made: list[GpuGuard] = []

    def __call__(self) -> GpuGuard:
        policy = Budget(lambda: self.gpu.info(0), headroom_bytes=GIB)
        arbiter = redis_arbiter(
            "gpu0", prefix=self.prefix, clock=self.clock, aging_s=30.0, policy=policy
        )
        guard = GpuGuard(clock=self.clock, arbiter=arbiter)
        self.arbiters.append(arbiter)
        self.made.append(guard)
        SETTLERS.append(arbiter.settle)
        return guard


@pytest.fixture
def gpu() -> FakeDevices:
    return FakeDevices.with_gpus(80 * 1024)


@pytest.fixture
async def guards(gpu: FakeDevices) -> AsyncIterator[Guards]:
    made = Guards(gpu)
    try:
        yield made
    finally:
        SETTLERS.clear()
        for guard in made.made:
            await guard.aclose()
        await delete_keys(REDIS_URL, made.prefix)


async def test_guards_share_the_gpu_while_the_sum_fits(guards: Guards) -> None:
    a, b, c = guards(), guards(), guards()
    order: list[str] = []
    first = await start(a, "chat", order, memory_bytes=30 * GIB)
    second = await start(b, "embed", order, memory_bytes=30 * GIB)
    await until(lambda: first.holding and second.holding)
    third = await start(c, "chat", order, memory_bytes=30 * GIB)  # 90 GiB: it waits
    await checkpoints()
    assert not third.holding
    assert c.queue_length == 1
    await until(lambda: len(c.snapshot().holders) == 2)
    first.finish()
    await third.until_holding()
    assert second.holding
    second.finish()
    third.finish()
    await asyncio.gather(first.task, second.task, third.task)


async def test_two_loads_never_hold_together(guards: Guards) -> None:
    a, b = guards(), guards()
    order: list[str] = []
    load = await start(a, "load", order, model="m1", memory_bytes=10 * GIB)
    await load.until_holding()
    other_load = await start(b, "load", order, model="m2", memory_bytes=10 * GIB)
    chat = await start(b, "chat", order, memory_bytes=10 * GIB)  # behind the second load
    await checkpoints()
    assert not other_load.holding
    assert not chat.holding
    load.finish()
    await other_load.until_holding()
    await chat.until_holding()  # a chat beside one load is fine
    other_load.finish()
    chat.finish()
    await asyncio.gather(load.task, other_load.task, chat.task)


async def test_a_big_head_is_not_overtaken_by_small_ones(guards: Guards) -> None:
    a, b, c = guards(), guards(), guards()
    order: list[str] = []
    holder = await start(a, "chat", order, memory_bytes=50 * GIB)
    await holder.until_holding()
    big = await start(b, "embed", order, memory_bytes=50 * GIB)  # 100 GiB: waits
    small = [await start(c, f"small{i}", order, memory_bytes=GIB) for i in range(3)]
    await checkpoints()
    assert not big.holding
    assert not any(op.holding for op in small)
    holder.finish()
    await big.until_holding()
    await until(lambda: all(op.holding for op in small))  # 53 GiB fit beside it
    # Redis granted them in line order (fences); their processes may start in any order.
    fences = [op.lease.fence if op.lease is not None else None for op in (big, *small)]
    assert fences == sorted(fences, key=lambda fence: fence or 0)
    assert None not in fences
    for op in (big, *small):
        op.finish()
    await asyncio.gather(holder.task, big.task, *(op.task for op in small))


async def test_losing_one_grant_keeps_the_others(guards: Guards) -> None:
    a = guards()
    order: list[str] = []
    kept = await start(a, "chat", order, memory_bytes=10 * GIB)
    lost = await start(a, "embed", order, memory_bytes=10 * GIB)
    await until(lambda: kept.holding and lost.holding)
    assert lost.lease is not None
    arbiter = guards.arbiters[0]
    client = redis.Redis.from_url(REDIS_URL)
    grants = {tid.decode(): raw for tid, raw in client.hgetall(f"{arbiter.key}:holders").items()}
    (tid,) = [t for t, raw in grants.items() if b'"o": "embed"' in raw or b'"o":"embed"' in raw]
    assert client.hdel(f"{arbiter.key}:holders", tid) == 1  # its grant is gone from the ledger
    with pytest.raises(LeaseLost, match="gone or taken over"):
        await asyncio.wait_for(lost.task, 10.0)  # its next beat finds it gone
    assert kept.holding
    assert [h.operation for h in a.snapshot().holders] == ["chat"]
    kept.finish()
    await kept.task


async def test_leases_holding_side_by_side_each_run_their_fenced_work(
    guards: Guards,
) -> None:
    a = guards()
    first = await a.acquire("chat", memory_bytes=10 * GIB)
    second = await a.acquire("embed", memory_bytes=10 * GIB)
    assert first.fence is not None
    assert second.fence is not None
    assert first.fence < second.fence

    async def work() -> str:
        return "done"

    assert await second.run(work()) == "done"
    assert await first.run(work()) == "done"  # older, but granted beside: not taken over
    first.release()
    second.release()


def test_a_grant_made_after_an_older_one_lapsed_fences_it_off() -> None:
    book = FenceBook("gpu0")
    book.admit(12, floor=10, operation="chat")  # granted beside 10
    book.admit(10, operation="chat")
    book.admit(20, floor=12, operation="chat")  # granted once 10 was gone
    book.admit(12, floor=10, operation="chat")
    with pytest.raises(StaleFence):
        book.admit(10, operation="chat")


async def test_the_policy_here_has_the_last_word(guards: Guards, gpu: FakeDevices) -> None:
    a, b, c = guards(), guards(), guards()
    order: list[str] = []
    holder = await start(a, "chat", order, memory_bytes=50 * GIB)
    await holder.until_holding()
    head = await start(b, "embed", order, memory_bytes=40 * GIB)  # 90 GiB: waits
    late = await start(c, "chat2", order, memory_bytes=20 * GIB)  # behind it
    await checkpoints()
    # Something outside gpuguard takes 20 GiB after both asked: Redis still counts the room
    # they measured (40 + 20 fit), the policy in the granted process does not.
    gpu.set_free(0, 60 * GIB)
    holder.finish()
    await head.until_holding()
    await checkpoints()
    assert not late.holding  # sent back to the head of the line, to run alone
    head.finish()
    await late.until_holding()
    late.finish()
    await asyncio.gather(holder.task, head.task, late.task)
    assert order == ["chat", "embed", "chat2"]


async def _until_renewed(client: redis.Redis[bytes], key: str, after: dict[str, int]) -> None:
    """Until every grant in ``after`` was renewed by Redis past its expiry there (bounded)."""
    for _ in range(400):  # bounded: beats come every ttl/5
        now = {t: json.loads(raw)["u"] for t, raw in _grants(client, key).items()}
        if all(now.get(t, 0) > u for t, u in after.items()):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"grants not renewed: {after} -> {_grants(client, key)}")


def _grants(client: redis.Redis[bytes], key: str) -> dict[str, bytes]:
    return {tid.decode(): raw for tid, raw in client.hgetall(f"{key}:holders").items()}


@pytest.mark.parametrize("fault", ["client-kill", "restart"])
async def test_every_grant_of_a_process_outlives_a_lost_connection_or_a_lost_redis(
    tmp_path: Path, fault: str
) -> None:
    gpu = FakeDevices.with_gpus(80 * 1024)
    policy = Budget(lambda: gpu.info(0), headroom_bytes=GIB)
    with private_redis(tmp_path) as server:
        guard = GpuGuard.redis(server.url, "gpu0", ttl_s=2.0, policy=policy)
        admin = redis.Redis(port=server.port, socket_timeout=5)
        try:
            order: list[str] = []
            first = await start(guard, "chat", order, memory_bytes=10 * GIB)
            second = await start(guard, "embed", order, memory_bytes=10 * GIB)
            await until(lambda: first.holding and second.holding, limit=10_000)
            key = "gpuguard:{gpu0}"
            before = {t: json.loads(raw)["u"] for t, raw in _grants(admin, key).items()}
            assert len(before) == 2
            if fault == "client-kill":
                for client_type in ("normal", "pubsub"):
                    admin.execute_command("CLIENT", "KILL", "TYPE", client_type, "SKIPME", "yes")
                await _until_renewed(admin, key, before)
            else:
                server.kill()
                server.start()  # every key lost: the next beat re-asserts both grants
                await _until_renewed(admin, key, dict.fromkeys(before, 0))
            assert first.holding
            assert second.holding
            assert sorted(_grants(admin, key)) == sorted(before)
            first.finish()
            second.finish()
            await asyncio.gather(first.task, second.task)
        finally:
            await guard.aclose()
            admin.close()


def _worker(name: str, prefix: str, ledger: Path, gib: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    args = ["-m", "tests.guard._redis_budget_worker", REDIS_URL, name, prefix, str(ledger)]
    return subprocess.Popen([sys.executable, *args, str(gib)], env=env)


def _held(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


async def _until_held(ledger: Path, count: int, workers: list[subprocess.Popen[bytes]]) -> None:
    for _ in range(600):  # bounded: 30 s for two interpreters to start and be granted
        if len(_held(ledger)) >= count:
            return
        assert all(w.poll() is None for w in workers), "a worker died"
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} holders expected, ledger: {_held(ledger)}")


async def test_processes_share_by_the_sum_and_a_killed_one_frees_its_share(
    tmp_path: Path,
) -> None:
    require_redis()
    name, prefix = "gpu0", f"gpuguard-test-{uuid.uuid4().hex[:10]}"
    ledger = tmp_path / "ledger"
    workers = [_worker(name, prefix, ledger, 40), _worker(name, prefix, ledger, 30)]
    gpu = FakeDevices.with_gpus(80 * 1024)
    policy = Budget(lambda: gpu.info(0), headroom_bytes=GIB)
    guard = GpuGuard.redis(REDIS_URL, name, prefix=prefix, ttl_s=1.0, policy=policy)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await _until_held(ledger, 2, workers)  # 40 + 30 GiB: both hold at once
        assert client.hlen(f"{prefix}:{{{name}}}:holders") == 2
        assert all(w.poll() is None for w in workers)
        asking = asyncio.create_task(guard.acquire("chat", memory_bytes=30 * GIB))
        await until(lambda: guard.queue_length == 1, limit=10_000)
        assert not asking.done()  # 100 GiB would not fit
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        lease = await asyncio.wait_for(asking, 10.0)  # once the dead one's TTL lapsed
        assert workers[1].poll() is None  # the other holder's share stands
        holders = {h.pid for h in guard.snapshot().holders}
        assert holders == {workers[1].pid, os.getpid()}

        lease.release()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
            worker.wait()
        await guard.aclose()
        await delete_keys(REDIS_URL, prefix)


def test_the_budget_is_chosen_and_configured_for_the_redis_scope(gpu: FakeDevices) -> None:
    choice = choose_policy("budget", scope="redis", read=lambda: gpu.info(0), headroom_bytes=GIB)
    assert isinstance(choice.policy, Budget)
    auto = choose_policy("auto", scope="redis", read=lambda: gpu.info(0), headroom_bytes=GIB)
    assert isinstance(auto.policy, Budget)
    settings = load_settings(
        guard={"policy": "budget", "scope": "redis", "redis_url": "redis://127.0.0.1:6379/0"}
    )
    assert settings.guard.policy == "budget"
