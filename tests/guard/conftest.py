"""Fixtures that make the contract suite scope-agnostic.

Every test builds its guard through ``make_guard``, parametrised over :data:`SCOPES`: the
in-process guard, the host-wide guard (the guards of one test meet in that test's own lock
directory) and the Redis guard (the real Redis on 127.0.0.1:6379, one key prefix per guard,
removed afterwards); and the in-process, host-wide and Redis guards under the budget policy,
where no operation declares its memory, so each runs alone and the whole exclusive contract
must hold.
A Redis guard orders its queue by the test's FakeClock, and the
checkpoint helpers also wait for its round trips to Redis (:func:`._support.settled`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gpuguard import FakeClock, GpuGuard
from gpuguard.devices import FakeDevices
from gpuguard.guard.policies import EXCLUSIVE, Budget
from gpuguard.guard.scopes import make_arbiter
from gpuguard.guard.scopes.local import LocalArbiter

from ._support import SETTLERS, MakeGuard
from .redis_support import REDIS_URL, delete_keys, redis_arbiter

SCOPES = ["in-process", "in-process-budget", "host", "host-budget", "redis", "redis-budget"]


@pytest.fixture(params=SCOPES)
def scope(request: pytest.FixtureRequest) -> str:
    scope: str = request.param
    return scope


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_guard(scope: str, clock: FakeClock, tmp_path: Path) -> AsyncIterator[MakeGuard]:
    """Build a guard of the scope under test on a FakeClock (``clock`` unless given one)."""
    guards: list[GpuGuard] = []
    prefix = f"gpuguard-test-{uuid.uuid4().hex[:10]}"

    def make(*, clock: FakeClock = clock, **options: Any) -> GpuGuard:
        if scope == "in-process":
            return GpuGuard(clock=clock, **options)
        if scope == "in-process-budget":
            aging_s = options.pop("aging_s", 30.0)
            local = LocalArbiter(aging_s=aging_s, policy=_fake_budget(), clock=clock)
            return GpuGuard(clock=clock, arbiter=local, **options)
        if scope == "host":
            host_guard = GpuGuard.host(lock_dir=tmp_path / "locks", clock=clock, **options)
            guards.append(host_guard)
            return host_guard
        if scope == "host-budget":
            gpu = FakeDevices.with_gpus(80 * 1024)
            policy = Budget(lambda: gpu.info(0), headroom_bytes=1024**3)
            host = make_arbiter(
                "host",
                "gpu0",
                aging_s=options.pop("aging_s", 30.0),
                clock=clock,
                lock_dir=tmp_path / "locks",
                policy=policy,
            )
            budget_guard = GpuGuard(clock=clock, arbiter=host, **options)
            guards.append(budget_guard)
            return budget_guard
        arbiter = redis_arbiter(
            f"gpu{len(guards)}",
            prefix=prefix,
            clock=clock,
            aging_s=options.pop("aging_s", 30.0),
            policy=_fake_budget() if scope == "redis-budget" else EXCLUSIVE,
        )
        guard = GpuGuard(clock=clock, arbiter=arbiter, **options)
        guards.append(guard)
        SETTLERS.append(arbiter.settle)
        return guard

    try:
        yield make
    finally:
        SETTLERS.clear()
        for guard in guards:
            await guard.aclose()
        if scope.startswith("redis"):
            await delete_keys(REDIS_URL, prefix)


def _fake_budget() -> Budget:
    """The budget policy on an 80-GiB fake GPU, 1 GiB kept free."""
    gpu = FakeDevices.with_gpus(80 * 1024)
    return Budget(lambda: gpu.info(0), headroom_bytes=1024**3)
