"""The devices seam: the fake answers as set, fails like a lost driver; NVML absent is None."""

from __future__ import annotations

import pytest

from gpuguard.devices import (
    DevicesUnavailable,
    FakeDevices,
    GpuInfo,
    GpuProcess,
    NvmlDevices,
    detect_devices,
)

MIB = 1024 * 1024


def test_a_fake_gpu_reports_what_was_set() -> None:
    devices = FakeDevices.with_gpus(80_000, 24_000)
    assert devices.count() == 2
    devices.set_free(0, 50_000 * MIB)
    devices.set_processes(0, GpuProcess(pid=41, used_bytes=20_000 * MIB))
    gpu = devices.info(0)
    assert (gpu.total_bytes, gpu.free_bytes, gpu.used_bytes) == (
        80_000 * MIB,
        50_000 * MIB,
        30_000 * MIB,
    )
    assert gpu.used_by({41}) == 20_000 * MIB
    assert gpu.used_by({42}) == 0
    assert devices.info(1).free_bytes == 24_000 * MIB


def test_a_fake_allocation_moves_the_process_and_the_free_memory_together() -> None:
    devices = FakeDevices.with_gpus(1024)
    devices.allocate(0, 7, 600 * MIB)
    devices.allocate(0, 7, -100 * MIB)
    gpu = devices.info(0)
    assert (gpu.used_by({7}), gpu.free_bytes) == (500 * MIB, 524 * MIB)
    with pytest.raises(ValueError, match="cannot use"):
        devices.allocate(0, 7, 600 * MIB)  # more than is free
    devices.allocate(0, 7, -500 * MIB)
    assert devices.info(0).processes == ()


def test_a_failing_fake_raises_until_it_answers_again() -> None:
    devices = FakeDevices(GpuInfo(0, "Fake", "GPU-0", 8 * MIB, 8 * MIB))
    devices.fail("NVML_ERROR_GPU_IS_LOST")
    with pytest.raises(DevicesUnavailable, match="GPU_IS_LOST"):
        devices.info(0)
    devices.fail(None)
    assert devices.count() == 1


def test_an_unknown_gpu_index_is_a_clear_error() -> None:
    with pytest.raises(DevicesUnavailable, match="no GPU 3"):
        FakeDevices.with_gpus(1024).info(3)


def test_detection_finds_a_working_nvml_or_says_none() -> None:
    devices = detect_devices()
    if devices is None:  # no NVIDIA driver here: NVML cannot start, and says why
        with pytest.raises(DevicesUnavailable, match="NVML"):
            NvmlDevices()
        return
    gpu = devices.info(0)
    assert gpu.total_bytes > 0
    assert 0 <= gpu.free_bytes <= gpu.total_bytes
    assert gpu.uuid.startswith("GPU-")
