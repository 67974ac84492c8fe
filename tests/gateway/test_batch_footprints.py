"""Embedding batches are measured on their GPU, remembered, and declared by later batches."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gpuguard import EmbeddingError, GpuGuard
from gpuguard.devices import DevicesUnavailable, FakeDevices, FootprintBook, ProcessGpuMemory
from gpuguard.embed import Vectors
from gpuguard.gateway import FootprintMeter, ModelGateway
from gpuguard.settings import build_guards, load_settings
from gpuguard.testing import FakeBackend, HashEmbedder

from ._budget import budget_guard

GIB = 1024**3
MIB = 1024**2
EMB = "emb"


class GpuHashEmbedder(HashEmbedder):
    """Takes ``weights`` on fake GPU ``gpu`` when it loads, and what its largest batch needs
    (``batch(texts)``) when it embeds, kept afterwards as a caching allocator keeps it.

    ``during`` runs inside each batch, while its lease is held.
    """

    def __init__(
        self,
        devices: FakeDevices,
        *,
        gpu: int = 0,
        weights: int = GIB,
        batch: Callable[[list[str]], int] = lambda texts: 512 * MIB,
        during: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=EMB, device=f"cuda:{gpu}")
        self.devices, self.gpu, self.weights = devices, gpu, weights
        self.batch, self.during = batch, during
        self.cached = 0

    def _load_sync(self) -> int:
        self.devices.allocate(self.gpu, os.getpid(), self.weights)
        return super()._load_sync()

    def _encode_sync(self, texts: list[str]) -> Vectors:
        if self.during is not None:
            self.during()
        needs = self.batch(texts)
        if needs > self.cached:
            self.devices.allocate(self.gpu, os.getpid(), needs - self.cached)
            self.cached = needs
        return super()._encode_sync(texts)


@pytest.fixture
def book(tmp_path: Path) -> FootprintBook:
    return FootprintBook(tmp_path / "footprints.json", engine="fake")


def gateway(
    devices: FakeDevices,
    book: FootprintBook,
    gpu: HashEmbedder,
    *,
    guard: GpuGuard | None = None,
    read: Callable[[int], int] | None = None,
) -> ModelGateway:
    return ModelGateway(
        FakeBackend(["m1"]),
        guard=budget_guard(devices, book) if guard is None else guard,
        gpu_embedder=gpu,
        cpu_embedder=HashEmbedder(name=EMB),
        footprints=FootprintMeter(book, ProcessGpuMemory(devices) if read is None else read),
    )


async def test_a_batch_is_measured_and_kept_apart_from_the_models_footprint(
    devices: FakeDevices, book: FootprintBook
) -> None:
    gw = gateway(devices, book, GpuHashEmbedder(devices))
    await gw.embed_request(["a query"])
    assert book.measured(EMB) == GIB  # the load
    assert book.measured_batch(EMB) == 512 * MIB  # what the batch added over it
    again = FootprintBook(book.path, engine="fake")
    assert again.measured_batch(EMB) == 512 * MIB  # kept on disk
    assert dict(again) == {EMB: GIB}  # the mapping lists models only


async def test_later_batches_declare_the_model_and_its_batch(
    devices: FakeDevices, book: FootprintBook
) -> None:
    guard = budget_guard(devices, book)
    declared: list[int | None] = []

    def note() -> None:  # the loop waits on this batch meanwhile: the guard stands still
        declared.extend(holder.memory_bytes for holder in guard.snapshot().holders)

    gw = gateway(devices, book, GpuHashEmbedder(devices, during=note), guard=guard)
    await gw.embed_request(["first"])
    await gw.embed_request(["second"])
    assert declared == [GIB, GIB + 512 * MIB]  # unknown batch: the model's footprint


async def test_bulk_batches_are_measured_and_declared(
    devices: FakeDevices, book: FootprintBook
) -> None:
    guard = budget_guard(devices, book)
    declared: list[tuple[str, int | None]] = []

    def note() -> None:
        declared.extend((h.operation, h.memory_bytes) for h in guard.snapshot().holders)

    gpu = GpuHashEmbedder(devices, batch=lambda texts: len(texts) * 100 * MIB, during=note)
    gw = gateway(devices, book, gpu, guard=guard)
    await gw.load_gpu_embedder()
    bulk = gw.bulk
    assert bulk is not None
    async with bulk.embed_batches([f"text {n}" for n in range(5)], batch_size=2) as run:
        devices_seen = [batch.device async for batch in run]
    assert devices_seen == ["gpu", "gpu", "gpu"]
    # Batches of 2, 2 and 1 texts: the first measures 200 MiB, the others add nothing more.
    assert book.measured_batch(EMB) == 200 * MIB
    assert declared == [
        ("bulk-embedding", GIB),
        ("bulk-embedding", GIB + 200 * MIB),
        ("bulk-embedding", GIB + 200 * MIB),
    ]


async def test_a_bigger_batch_raises_the_figure_a_smaller_one_never_lowers_it(
    devices: FakeDevices, book: FootprintBook
) -> None:
    gpu = GpuHashEmbedder(devices, batch=lambda texts: len(texts) * 100 * MIB)

    def free_cache() -> None:  # as an engine that empties its allocator's cache does
        devices.allocate(0, os.getpid(), -gpu.cached)
        gpu.cached = 0

    gw = gateway(devices, book, gpu)
    await gw.embed_request(["one", "two"])
    assert book.measured_batch(EMB) == 200 * MIB
    free_cache()
    await gw.embed_request(["one"])  # adds 100 MiB
    assert book.measured_batch(EMB) == 200 * MIB
    free_cache()
    await gw.embed_request(["one", "two", "three", "four"])
    assert book.measured_batch(EMB) == 400 * MIB


async def test_a_batch_on_gpu_1_is_measured_there_alone(tmp_path: Path) -> None:
    devices = FakeDevices.with_gpus(24 * 1024, 24 * 1024)
    book = FootprintBook(tmp_path / "footprints.json", engine="fake")
    limits = load_settings(guard={"scope": "process", "policy": "budget", "name": "bat0"}).guard
    gpus = build_guards(limits, detect=lambda: devices, footprints=book)

    def elsewhere() -> None:  # other work of this process takes memory on GPU 0 meanwhile
        devices.allocate(0, os.getpid(), GIB)

    gw = ModelGateway(
        FakeBackend(["m1"]),
        gpus=gpus,
        gpu_embedder=GpuHashEmbedder(devices, gpu=1, weights=2 * GIB, during=elsewhere),
        gpu_embedder_gpu=1,
        cpu_embedder=HashEmbedder(name=EMB),
        footprints=FootprintMeter(book, ProcessGpuMemory(devices)),
    )
    await gw.embed_request(["a query"])
    assert (book.measured(EMB), book.measured_batch(EMB)) == (2 * GIB, 512 * MIB)
    await gpus.aclose()


async def test_a_configured_footprint_is_what_a_batch_declares(
    devices: FakeDevices, tmp_path: Path
) -> None:
    book = FootprintBook(tmp_path / "f.json", engine="fake", overrides={EMB: 3 * GIB})
    guard = budget_guard(devices, book)
    declared: list[int | None] = []

    def note() -> None:
        declared.extend(holder.memory_bytes for holder in guard.snapshot().holders)

    gw = gateway(devices, book, GpuHashEmbedder(devices, during=note), guard=guard)
    await gw.embed_request(["first"])
    await gw.embed_request(["second"])
    assert book.measured_batch(EMB) == 512 * MIB  # measured all the same
    assert declared == [3 * GIB, 3 * GIB]


async def test_a_gpu_that_cannot_be_read_never_fails_a_batch_and_says_so_once(
    devices: FakeDevices, book: FootprintBook, caplog: pytest.LogCaptureFixture
) -> None:
    def unreadable(gpu: int) -> int:
        raise DevicesUnavailable("NVML_ERROR_UNKNOWN")

    gw = gateway(devices, book, GpuHashEmbedder(devices), read=unreadable)
    with caplog.at_level(logging.WARNING, logger="gpuguard.gateway"):
        for text in ("one", "two", "three"):
            vectors = (await gw.embed_request([text])).vectors
            assert vectors.shape == (1, 384)
    assert book.measured_batch(EMB) is None
    said = [r.getMessage() for r in caplog.records if "batches" in r.getMessage()]
    assert said == [
        "embedding batches of 'emb' on GPU 0 are not measured: it cannot be read "
        "(NVML_ERROR_UNKNOWN)"
    ]


async def test_a_batch_that_fails_is_not_measured(
    devices: FakeDevices, book: FootprintBook
) -> None:
    def fail() -> None:
        devices.allocate(0, os.getpid(), GIB)  # what it took before it failed
        raise RuntimeError("CUDA out of memory")

    gw = gateway(devices, book, GpuHashEmbedder(devices, during=fail))
    with pytest.raises(EmbeddingError, match="out of memory"):
        await gw.embed_request(["a query"])
    assert book.measured_batch(EMB) is None
