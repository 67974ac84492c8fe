"""The budget counts resident models explicitly, by footprint, whether or not a lease holds.

An 80 GiB fake GPU with 4 GiB headroom (76 GiB to share); this process keeps models loaded
that the driver lists under its pid, as an in-process engine's are.
"""

from __future__ import annotations

import os

import pytest

from gpuguard import FakeClock, GpuGuard, WouldBlock
from gpuguard.devices import FakeDevices
from gpuguard.guard.policies import Budget
from gpuguard.guard.scopes.local import LocalArbiter

GIB = 1024**3
FOOTPRINTS = {"chat-30g": 30 * GIB, "other-30g": 30 * GIB, "new-20g": 20 * GIB}


def budget_guard(devices: FakeDevices, resident: set[str]) -> GpuGuard:
    policy = Budget(
        lambda: devices.info(0), headroom_bytes=4 * GIB, footprints=FOOTPRINTS, resident=resident
    )
    arbiter = LocalArbiter(aging_s=None, policy=policy, clock=FakeClock())
    return GpuGuard(clock=FakeClock(), arbiter=arbiter, wait_timeout=None)


@pytest.fixture
def devices() -> FakeDevices:
    devices = FakeDevices.with_gpus(80 * 1024)
    devices.allocate(0, os.getpid(), 30 * GIB)  # chat-30g, loaded
    return devices


async def test_work_declared_beside_a_load_counts_on_top_of_the_resident_models(
    devices: FakeDevices,
) -> None:
    guard = budget_guard(devices, {"chat-30g"})
    async with guard.hold("load", model="new-20g"):  # 30 resident + 20 coming
        with pytest.raises(WouldBlock):  # 30 + 20 + 30 > 76
            async with guard.try_hold("batch", memory_bytes=30 * GIB):
                pass
        async with guard.try_hold("batch", memory_bytes=26 * GIB):  # 30 + 20 + 26 <= 76
            pass


async def test_a_chat_on_a_resident_model_counts_it_once(devices: FakeDevices) -> None:
    guard = budget_guard(devices, {"chat-30g"})
    async with (
        guard.hold("batch", memory_bytes=40 * GIB),
        guard.try_hold("chat", model="chat-30g"),  # 40 + 30 <= 76: its model is its need
    ):
        assert len(guard.snapshot().holders) == 2


async def test_a_load_may_count_on_idle_resident_models_being_unloaded_first(
    devices: FakeDevices,
) -> None:
    devices.allocate(0, os.getpid(), 30 * GIB)  # other-30g, loaded too
    guard = budget_guard(devices, {"chat-30g", "other-30g"})
    async with guard.hold("chat", model="chat-30g"):
        with pytest.raises(WouldBlock):  # 30 + 30 + 20 > 76: a batch must wait
            async with guard.try_hold("batch", memory_bytes=20 * GIB):
                pass
        async with guard.try_hold("load", model="new-20g"):  # other-30g can make room
            pass


async def test_resident_models_are_in_the_snapshot_with_their_bytes(
    devices: FakeDevices,
) -> None:
    guard = budget_guard(devices, {"chat-30g", "unmeasured"})
    memory = guard.snapshot().memory
    assert memory is not None
    assert memory.resident == {"chat-30g": 30 * GIB, "unmeasured": None}
    assert memory.resident_bytes == 30 * GIB
    assert memory.committed_bytes == 30 * GIB
    assert guard.snapshot().to_dict()["memory"]["resident"] == {
        "chat-30g": 30 * GIB,
        "unmeasured": None,
    }


async def test_a_resident_model_the_driver_does_not_list_still_counts(
    devices: FakeDevices,
) -> None:
    devices.allocate(0, os.getpid(), -30 * GIB)  # the driver lists nothing for this process
    guard = budget_guard(devices, {"chat-30g"})
    async with guard.hold("chat", model="other-30g"):
        with pytest.raises(WouldBlock):  # 30 resident + 30 + 20 > 76
            async with guard.try_hold("batch", memory_bytes=20 * GIB):
                pass
    memory = guard.snapshot().memory
    assert memory is not None
    assert memory.committed_bytes == 30 * GIB
