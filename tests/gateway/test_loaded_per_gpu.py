"""``max_loaded_models`` per GPU: with models on two GPUs, each GPU keeps its own count and a
load makes room only among the models of its own GPU."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from gpuguard import GpuEvent, GpuSet, GpuStatus
from gpuguard.devices import FakeDevices
from gpuguard.gateway import ModelGateway, Placement
from gpuguard.settings import build_guards, load_settings
from gpuguard.testing import FakeBackend


def two_gpus(name: str) -> GpuSet:
    """Two 24 GiB GPUs as the fake NVML reports them, leased as the settings build them."""
    devices = FakeDevices.with_gpus(24 * 1024, 24 * 1024)
    limits = load_settings(guard={"scope": "process", "name": name}).guard
    return build_guards(limits, detect=lambda: devices)


def gateway_over(
    gpus: GpuSet,
    backend: FakeBackend,
    pins: Mapping[str, int] | Placement,
    max_loaded: int,
    model: str | None = None,
) -> ModelGateway:
    return ModelGateway(
        backend, model=model, gpus=gpus, model_gpus=pins, max_loaded_models=max_loaded
    )


def granted_on(gpus: GpuSet, operation: str) -> list[str]:
    """The GPUs ``operation`` was granted on, in order."""
    return [
        event.guard
        for event in gpus.events.history(kinds={"gpu"})
        if isinstance(event, GpuEvent)
        and event.operation == operation
        and event.status is GpuStatus.STARTED
    ]


async def test_a_load_on_gpu_1_leaves_gpu_0s_model_loaded() -> None:
    gpus = two_gpus("per0")
    backend = FakeBackend(["a", "b"])
    gateway = gateway_over(gpus, backend, {"a": 0, "b": 1}, max_loaded=1)
    await gateway.load("a")
    await gateway.load("b")  # GPU 1 had none: nothing to unload
    assert backend.loaded == {"a", "b"}
    assert granted_on(gpus, "load") == ["per0", "gpu1"]
    await gpus.aclose()


async def test_past_the_bound_the_victim_is_the_least_recent_of_the_same_gpu(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus = two_gpus("per1")
    backend = FakeBackend(["a", "x", "y", "z"])
    gateway = gateway_over(gpus, backend, {"a": 0, "x": 1, "y": 1, "z": 1}, max_loaded=2)
    await gateway.load("a")  # GPU 0's, and the least recently used of all
    await gateway.load("x")
    await gateway.load("y")  # GPU 1: x, y; GPU 0: a. Three loaded, two per GPU at most
    assert backend.loaded == {"a", "x", "y"}
    with caplog.at_level(logging.INFO, logger="gpuguard.gateway"):
        await gateway.load("z")  # GPU 1 is full: its least recent (x) goes, a stays
    assert backend.loaded == {"a", "y", "z"}
    assert "unloading 'x' to make room for 'z' (max_loaded_models)" in caplog.messages
    await gpus.aclose()


async def test_a_background_prewarm_counts_the_models_of_its_own_gpu() -> None:
    gpus = two_gpus("per2")
    backend = FakeBackend(["m", "n", "o"])
    gateway = gateway_over(gpus, backend, {"m": 0, "n": 1, "o": 1}, max_loaded=1, model="m")
    await gateway.prewarm()  # the current model, on GPU 0
    await gateway.prewarm("n")  # another model, on GPU 1, where nothing is loaded: it loads
    assert backend.loaded == {"m", "n"}
    await gateway.prewarm("o")  # GPU 1 is full and a prewarm never unloads: skipped
    assert backend.loaded == {"m", "n"}
    assert granted_on(gpus, "prewarm") == ["per2", "gpu1"]
    await gpus.aclose()


async def test_a_skipped_prewarm_leaves_its_model_unplaced() -> None:
    gpus = two_gpus("per3")
    backend = FakeBackend(["m", "n", "free"])
    placement = Placement({"m": 0, "n": 1})
    gateway = gateway_over(gpus, backend, placement, max_loaded=1, model="m")
    await gateway.load("m")
    await gateway.load("n")  # both GPUs full
    await gateway.prewarm("free")  # skipped: wherever it would go, that GPU is full
    assert placement.get("free") is None  # placed at its first operation, not here
    assert backend.loaded == {"m", "n"}
    await gpus.aclose()


async def test_one_gpu_keeps_one_count() -> None:
    gpus = two_gpus("per4")
    backend = FakeBackend(["a", "b"])
    gateway = gateway_over(gpus, backend, {"a": 1, "b": 1}, max_loaded=1)
    await gateway.load("a")
    await gateway.load("b")
    assert backend.loaded == {"b"}
    await gpus.aclose()
