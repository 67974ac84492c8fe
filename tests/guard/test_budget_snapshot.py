"""The snapshot under a sharing policy: every holder, what each counts, budget and free memory."""

from __future__ import annotations

import os

from gpuguard import FakeClock, GpuGuard, Priority
from gpuguard.devices import FakeDevices, GpuProcess
from gpuguard.guard.policies import Budget
from gpuguard.guard.scopes.local import LocalArbiter

GIB = 1024**3
MIB = 1024**2


def budget_guard(devices: FakeDevices) -> GpuGuard:
    """A guard on the fake GPU 0 with 4 GiB headroom; ``chat`` counts 8 GiB, ``embed`` 2."""
    policy = Budget(
        lambda: devices.info(0),
        headroom_bytes=4 * GIB,
        footprints={"chat": 8 * GIB, "embed": 2 * GIB},
    )
    arbiter = LocalArbiter(aging_s=None, policy=policy, clock=FakeClock())
    return GpuGuard(clock=FakeClock(), arbiter=arbiter, wait_timeout=None)


async def test_every_holder_is_listed_with_the_memory_it_counts() -> None:
    devices = FakeDevices.with_gpus(80 * 1024)
    guard = budget_guard(devices)
    async with (
        guard.hold("chat", model="chat", priority=Priority.INTERACTIVE),
        guard.hold("embed", model="embed"),
        guard.hold("batch", memory_bytes=3 * GIB),
    ):
        snapshot = guard.snapshot()
    assert [(h.operation, h.memory_bytes) for h in snapshot.holders] == [
        ("chat", 8 * GIB),
        ("embed", 2 * GIB),
        ("batch", 3 * GIB),
    ]
    assert snapshot.holder == snapshot.holders[0]  # the oldest, as before
    raw = snapshot.to_dict()
    assert [h["operation"] for h in raw["holders"]] == ["chat", "embed", "batch"]
    assert raw["holder"]["operation"] == "chat"


async def test_the_budget_free_memory_and_foreign_use_are_shown() -> None:
    devices = FakeDevices.with_gpus(80 * 1024)
    devices.set_free(0, 70 * GIB)  # 10 GiB used: 6 by this process, 4 by a foreign one
    devices.set_processes(0, GpuProcess(os.getpid(), 6 * GIB), GpuProcess(1, 4 * GIB))
    guard = budget_guard(devices)
    async with guard.hold("chat", model="chat"):
        memory = guard.snapshot().memory
    assert memory is not None
    assert memory.total_bytes == 80 * GIB
    assert memory.free_bytes == 70 * GIB
    assert memory.headroom_bytes == 4 * GIB
    assert memory.budget_bytes == 76 * GIB
    assert memory.committed_bytes == 8 * GIB + 4 * GIB  # max(declared, listed) + foreign
    assert guard.snapshot().to_dict()["memory"] == {
        "total_bytes": 80 * GIB,
        "free_bytes": 70 * GIB,
        "headroom_bytes": 4 * GIB,
        "budget_bytes": 76 * GIB,
        "committed_bytes": 10 * GIB,  # nobody holds now: all memory in use counts as it is
        "resident_bytes": 0,
        "resident": {},
    }


async def test_a_gpu_that_cannot_be_read_shows_no_memory_and_never_fails_the_snapshot() -> None:
    devices = FakeDevices.with_gpus(80 * 1024)
    guard = budget_guard(devices)
    devices.fail()
    async with guard.hold("chat", model="chat"):
        snapshot = guard.snapshot()
    assert snapshot.memory is None
    assert [h.operation for h in snapshot.holders] == ["chat"]


async def test_the_exclusive_policy_lists_its_one_holder_and_no_memory() -> None:
    guard = GpuGuard(clock=FakeClock())
    assert guard.snapshot().holders == ()
    async with guard.hold("load", model="m", memory_bytes=512 * MIB):
        snapshot = guard.snapshot()
    assert [(h.operation, h.memory_bytes) for h in snapshot.holders] == [("load", 512 * MIB)]
    assert snapshot.memory is None
    assert snapshot.to_dict()["memory"] is None
