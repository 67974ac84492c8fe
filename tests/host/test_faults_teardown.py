"""A dead holder's GPU context is torn down after its file locks: nobody is granted before.

Real processes for the holder and its death (SIGKILL); the driver's list of processes on the
GPU is a :class:`~gpuguard.devices.FakeDevices` the test sets, and time a FakeClock.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest

from gpuguard import FakeClock, GpuGuard, WouldBlock
from gpuguard.devices import FakeDevices, GpuProcess
from gpuguard.guard.scopes.host import HostArbiter
from gpuguard.settings import build_guard, load_settings

from .conftest import Processes, line

BOUND_S = 5.0


def guard_with(devices: FakeDevices, lock_dir: Path, clock: FakeClock) -> GpuGuard:
    def gpu_pids() -> set[int]:
        return {process.pid for process in devices.info(0).processes}

    arbiter = HostArbiter(
        "gpu0", lock_dir=lock_dir, aging_s=30.0, clock=clock, gpu_pids=gpu_pids, teardown_s=BOUND_S
    )
    return GpuGuard("gpu0", clock=clock, arbiter=arbiter, wait_timeout=None)


async def killed_holder(processes: Processes, lock_dir: Path, devices: FakeDevices) -> int:
    """A holder in another process, listed on the GPU, killed with SIGKILL (and reaped)."""
    holder = await processes.fault("hold", str(lock_dir), "train", "600")
    assert await line(holder) == "held"
    devices.set_processes(0, GpuProcess(holder.pid, 8 << 30))
    holder.send_signal(signal.SIGKILL)
    await holder.wait()
    return holder.pid


async def test_nobody_is_granted_while_the_dead_holder_is_still_on_the_gpu(
    tmp_path: Path, processes: Processes
) -> None:
    devices, clock = FakeDevices.with_gpus(24576), FakeClock()
    guard = guard_with(devices, tmp_path, clock)
    await killed_holder(processes, tmp_path, devices)

    with pytest.raises(WouldBlock):  # its locks are gone, its GPU context is not
        guard.acquire_nowait("next")
    devices.set_processes(0)  # the driver has torn it down
    guard.acquire_nowait("next").release()


async def test_a_waiter_is_granted_once_the_dead_holder_has_left_the_gpu(
    tmp_path: Path, processes: Processes
) -> None:
    devices, clock = FakeDevices.with_gpus(24576), FakeClock()
    guard = guard_with(devices, tmp_path, clock)
    holder = await processes.fault("hold", str(tmp_path), "train", "600")
    assert await line(holder) == "held"
    devices.set_processes(0, GpuProcess(holder.pid, 8 << 30))
    request = guard.hold("next")
    assert await request.reserve()

    holder.send_signal(signal.SIGKILL)
    await holder.wait()
    assert guard.snapshot().holder is None  # decided: the dead holder is gone from the lease
    assert guard.queue_length == 1  # and the waiter still waits
    devices.set_processes(0)
    async with asyncio.timeout(30):  # the watcher looks again while a teardown is pending
        async with request:
            assert guard.snapshot().holder is not None


async def test_the_wait_for_a_dead_holder_is_bounded_and_said(
    tmp_path: Path, processes: Processes, caplog: pytest.LogCaptureFixture
) -> None:
    devices, clock = FakeDevices.with_gpus(24576), FakeClock()
    guard = guard_with(devices, tmp_path, clock)
    pid = await killed_holder(processes, tmp_path, devices)
    with pytest.raises(WouldBlock):
        guard.acquire_nowait("next")

    caplog.set_level(logging.WARNING, logger="gpuguard.guard")
    clock.advance(BOUND_S)
    guard.acquire_nowait("next").release()  # listed still, but past the bound
    assert f"dead holder pid {pid} is still listed on the GPU" in caplog.text


async def test_without_a_list_of_the_gpu_processes_the_next_is_granted_at_once(
    tmp_path: Path, processes: Processes
) -> None:
    devices = FakeDevices.with_gpus(24576)
    guard = GpuGuard.host(lock_dir=tmp_path)  # no gpu_pids: nothing to wait for
    await killed_holder(processes, tmp_path, devices)
    guard.acquire_nowait("next").release()


async def test_a_driver_that_stops_answering_does_not_hold_the_gpu_back(
    tmp_path: Path, processes: Processes
) -> None:
    devices, clock = FakeDevices.with_gpus(24576), FakeClock()
    guard = guard_with(devices, tmp_path, clock)
    await killed_holder(processes, tmp_path, devices)
    devices.fail()
    guard.acquire_nowait("next").release()


async def test_the_configured_host_guard_asks_the_gpu_driver_for_its_processes(
    tmp_path: Path, processes: Processes
) -> None:
    """``[guard] scope = "host"`` (the server's default) waits for the dead holder where the
    driver lists the GPU's processes."""
    devices = FakeDevices.with_gpus(24576)
    settings = load_settings(guard={"scope": "host", "lock_dir": str(tmp_path)})
    guard = build_guard(settings.guard, detect=lambda: devices)
    await killed_holder(processes, tmp_path, devices)
    with pytest.raises(WouldBlock):
        guard.acquire_nowait("next")
    devices.set_processes(0)
    guard.acquire_nowait("next").release()
