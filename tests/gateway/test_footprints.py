"""Model loads are measured on the GPU and the footprint counts in the budget policy."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gpuguard import Priority, WouldBlock
from gpuguard.devices import (
    DevicesUnavailable,
    FakeDevices,
    FootprintBook,
    GpuProcess,
    ProcessGpuMemory,
)
from gpuguard.gateway import FootprintMeter, ModelGateway
from gpuguard.settings import build_guards, load_settings
from gpuguard.testing import FakeBackend

from ._budget import budget_guard

GIB = 1024**3


class GpuBackend(FakeBackend):
    """A fake whose load allocates ``sizes[model]`` on the fake GPU, in this process."""

    def __init__(self, devices: FakeDevices, allocates: dict[str, int]) -> None:
        super().__init__(("m1", "m2"))
        self.devices = devices
        self.allocates = allocates

    async def load(self, model: str) -> None:
        await super().load(model)
        used = self.devices.info(0).used_by({os.getpid()}) + self.allocates.get(model, 0)
        self.devices.set_processes(0, GpuProcess(os.getpid(), used))


@pytest.fixture
def book(tmp_path: Path) -> FootprintBook:
    return FootprintBook(tmp_path / "footprints.json", engine="fake", predict={"m1": GIB}.get)


def gateway(devices: FakeDevices, book: FootprintBook) -> ModelGateway:
    return ModelGateway(
        GpuBackend(devices, {"m1": 10 * GIB}),
        model="m1",
        guard=budget_guard(devices, book),
        footprints=FootprintMeter(book, ProcessGpuMemory(devices)),
    )


async def test_a_load_is_measured_remembered_and_logged_once(
    devices: FakeDevices, book: FootprintBook, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gpuguard.gateway"):
        await gateway(devices, book).load("m1")
    assert book.measured("m1") == 10 * GIB
    assert FootprintBook(book.path, engine="fake")["m1"] == 10 * GIB  # kept on disk
    lines = [r.getMessage() for r in caplog.records if "measured" in r.getMessage()]
    assert lines == ["loaded 'm1': predicted 1024 MiB, measured 10240 MiB"]


async def test_a_learned_footprint_lets_chats_share_the_gpu(
    devices: FakeDevices, book: FootprintBook
) -> None:
    guard = budget_guard(devices, book)
    async with guard.hold("chat", model="m1", priority=Priority.INTERACTIVE):
        with pytest.raises(WouldBlock):  # m1's size unknown: it runs alone
            async with guard.try_hold("chat", model="m1"):
                pass
    await gateway(devices, book).load("m1")
    async with (
        guard.hold("chat", model="m1", priority=Priority.INTERACTIVE),
        guard.try_hold("chat", model="m1"),  # 10 + 10 <= 24 - 2: side by side
    ):
        assert len(guard.snapshot().holders) == 2


async def test_a_load_that_takes_nothing_here_is_not_remembered(
    devices: FakeDevices, book: FootprintBook, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gpuguard.gateway"):
        await gateway(devices, book).load("m2")  # allocates nothing in this process
    assert book.measured("m2") is None
    assert any("footprint not measured" in r.getMessage() for r in caplog.records)


async def test_a_gpu_that_cannot_be_read_never_fails_the_load(
    devices: FakeDevices, book: FootprintBook, caplog: pytest.LogCaptureFixture
) -> None:
    def unreadable(gpu: int) -> int:
        raise DevicesUnavailable("NVML_ERROR_UNKNOWN")

    gw = ModelGateway(GpuBackend(devices, {"m1": GIB}), footprints=FootprintMeter(book, unreadable))
    with caplog.at_level(logging.WARNING, logger="gpuguard.gateway"):
        await gw.load("m1")
    assert [m.id for m in (await gw.status()).loaded] == ["m1"]
    assert book.measured("m1") is None
    assert any("not measured" in r.getMessage() for r in caplog.records)


async def test_loaded_models_report_their_footprint(
    devices: FakeDevices, book: FootprintBook
) -> None:
    gw = gateway(devices, book)
    await gw.load("m1")
    status = await gw.status()
    assert [(m.id, m.vram_bytes) for m in status.loaded] == [("m1", 10 * GIB)]
    assert [m.vram_bytes for m in await gw.models() if m.loaded] == [10 * GIB]


async def test_a_model_pinned_to_gpu_1_is_measured_on_gpu_1_only(tmp_path: Path) -> None:
    devices = FakeDevices.with_gpus(24 * 1024, 24 * 1024)
    book = FootprintBook(tmp_path / "footprints.json", engine="fake")
    limits = load_settings(guard={"scope": "process", "policy": "budget", "name": "pin0"}).guard
    gpus = build_guards(limits, detect=lambda: devices, footprints=book)

    class OnGpu1(FakeBackend):
        """Its load takes 10 GiB on GPU 1 while other work of this process takes 3 on GPU 0."""

        async def load(self, model: str) -> None:
            await super().load(model)
            devices.allocate(1, os.getpid(), 10 * GIB)
            devices.allocate(0, os.getpid(), 3 * GIB)

    gw = ModelGateway(
        OnGpu1(["m1"]),
        gpus=gpus,
        model_gpus={"m1": 1},
        footprints=FootprintMeter(book, ProcessGpuMemory(devices)),
    )
    await gw.load("m1")
    assert book.measured("m1") == 10 * GIB
    await gpus.aclose()
