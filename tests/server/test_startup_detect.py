"""A server's start-up asks the GPU driver once: for the footprints' meter, GPUs and guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuguard.devices import FakeDevices, nvml
from gpuguard.server._runtime import build_gateway
from gpuguard.settings import Settings, load_settings


def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path,
        llm={"backend": "fake"},
        embeddings={"gpu_engine": "hash", "cpu_engine": "hash"},
        guard={"scope": "host", "lock_dir": tmp_path / "locks", "name": "detect0"},
    )


def test_a_given_detect_is_asked_once(tmp_path: Path) -> None:
    devices = FakeDevices.with_gpus(80 * 1024, 80 * 1024)
    calls: list[None] = []

    def detect() -> FakeDevices:
        calls.append(None)
        return devices

    gateway = build_gateway(settings(tmp_path), detect=detect)
    assert gateway.gpus.indices == (0, 1)  # counted by the driver
    assert [guard.policy for guard in gateway.gpus] == ["budget", "budget"]  # its memory read
    assert len(calls) == 1


def test_nvml_is_started_once_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    devices = FakeDevices.with_gpus(80 * 1024)
    started: list[None] = []

    def start_nvml() -> FakeDevices:
        started.append(None)
        return devices

    monkeypatch.setattr(nvml, "NvmlDevices", start_nvml)
    gateway = build_gateway(settings(tmp_path))
    assert gateway.gpus.indices == (0,)
    assert len(started) == 1
