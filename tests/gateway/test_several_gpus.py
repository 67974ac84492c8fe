"""The gateway over several GPUs: pinned models take their GPU's lease, the rest go where
there is room, embedding requests and bulk batches spread over the GPUs before the CPU."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gpuguard import ConfigError, GpuEvent, GpuGuard, GpuSet, GpuStatus
from gpuguard.devices import FakeDevices, FootprintBook, ProcessGpuMemory
from gpuguard.embed import BulkEmbedder, EmbeddedBatch, EmbedderPair, Vectors
from gpuguard.gateway import FootprintMeter, ModelGateway, Placement, ResidentModels
from gpuguard.llm import ChatMessage
from gpuguard.settings import build_guards, load_settings
from gpuguard.testing import FakeBackend, HashEmbedder

GIB = 1024**3

HELLO = [ChatMessage("user", "hello there")]


def two_gpus() -> GpuSet:
    first = GpuGuard("gpu0")
    return GpuSet({0: first, 1: GpuGuard("gpu1", events=first.events)})


def granted_on(gpus: GpuSet, operation: str) -> list[str]:
    """The GPUs ``operation`` was granted on, in order."""
    return [
        event.guard
        for event in gpus.events.history(kinds={"gpu"})
        if isinstance(event, GpuEvent)
        and event.operation == operation
        and event.status is GpuStatus.STARTED
    ]


@asynccontextmanager
async def held(guard: GpuGuard) -> AsyncIterator[None]:
    """Hold ``guard``'s GPU from another task for the block (event-driven, no sleeps)."""
    granted, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with guard.hold("someone-else"):
            granted.set()
            await release.wait()

    task = asyncio.create_task(hold())
    await granted.wait()
    try:
        yield
    finally:
        release.set()
        await task


async def test_a_pinned_model_takes_its_gpus_lease_for_load_chat_and_unload() -> None:
    gpus = two_gpus()
    gateway = ModelGateway(FakeBackend(["m", "n"]), gpus=gpus, model_gpus={"n": 1})
    assert gateway.guard is gpus[0]
    await gateway.load("n")
    assert await gateway.complete(HELLO, model="n")
    await gateway.unload("n")
    for operation in ("load", "chat", "unload"):
        assert granted_on(gpus, operation) == ["gpu1"], operation


async def test_a_pin_to_a_gpu_outside_the_set_fails_at_start_up() -> None:
    with pytest.raises(ConfigError, match="GPU 2 is not one of this server's GPUs"):
        ModelGateway(FakeBackend(["m"]), gpus=two_gpus(), model_gpus={"m": 2})


async def test_an_unpinned_model_goes_to_the_gpu_with_room_and_stays_there() -> None:
    gpus = two_gpus()
    gateway = ModelGateway(FakeBackend(["m"]), gpus=gpus)
    async with held(gpus[0]):
        await gateway.load("m")
    assert await gateway.complete(HELLO, model="m")  # GPU 0 is free now: m's weights are on 1
    assert granted_on(gpus, "load") == ["gpu1"]
    assert granted_on(gpus, "chat") == ["gpu1"]


async def test_an_embedding_request_runs_on_the_gpu_with_room() -> None:
    gpus = two_gpus()
    on_0, on_1 = HashEmbedder(device="cuda:0"), HashEmbedder(device="cuda:1")
    gateway = ModelGateway(
        FakeBackend(["m"]),
        gpus=gpus,
        gpu_embedder=on_0,
        cpu_embedder=HashEmbedder(),
        more_gpu_embedders={1: on_1},
    )
    async with held(gpus[0]):
        await gateway.embed(["a query"])
    assert (on_0.calls, on_1.calls) == (0, 1)
    assert granted_on(gpus, "embed") == ["gpu1"]
    await gateway.aclose()


class GatedEmbedder(HashEmbedder):
    """A GPU embedder whose batches wait for ``gate``; ``entered`` is set at each batch."""

    def __init__(self, device: str) -> None:
        super().__init__(device=device)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.entered.set()
        await self.gate.wait()
        return await super().embed(texts)


async def test_bulk_batches_spread_over_two_gpus_then_run_on_the_cpu() -> None:
    gpus = two_gpus()
    cpu = HashEmbedder()
    on_0, on_1 = GatedEmbedder("cuda:0"), GatedEmbedder("cuda:1")
    for embedder in (on_0, on_1, cpu):
        await embedder.load()
    bulk = BulkEmbedder(
        EmbedderPair(on_0, cpu),
        gpus[0],
        batch_size=1,
        more_gpus=[(gpus[1], EmbedderPair(on_1, cpu))],
        by_room=lambda: [guard.name for guard in gpus.by_room()],
    )
    # Two batches at once: one on each GPU (each GPU has its worker).
    async with bulk.embed_batches(["one", "two"]) as run:
        batches = asyncio.create_task(collect(run))
        await on_0.entered.wait()
        await on_1.entered.wait()
        on_0.gate.set()
        on_1.gate.set()
        assert await batches == ["gpu", "gpu"]
    assert (on_0.calls, on_1.calls) == (1, 1)
    assert sorted(granted_on(gpus, "bulk-embedding")) == ["gpu0", "gpu1"]
    # Both GPUs held by someone else: every batch runs on the CPU.
    async with held(gpus[0]), held(gpus[1]), bulk.embed_batches(["three", "four"]) as run:
        assert await collect(run) == ["cpu", "cpu"]
    assert (on_0.calls, on_1.calls, cpu.calls) == (1, 1, 2)


async def collect(run: AsyncIterable[EmbeddedBatch[str]]) -> list[str]:
    return [batch.device async for batch in run]


async def test_bulk_tries_the_gpu_with_room_first() -> None:
    gpus = two_gpus()
    cpu = HashEmbedder()
    on_0, on_1 = HashEmbedder(device="cuda:0"), HashEmbedder(device="cuda:1")
    bulk = BulkEmbedder(
        EmbedderPair(on_0, cpu),
        gpus[0],
        more_gpus=[(gpus[1], EmbedderPair(on_1, cpu))],
        by_room=lambda: ["gpu1", "gpu0"],
    )
    for embedder in (on_0, on_1, cpu):
        await embedder.load()
    async with bulk.embed_batches(["one text"]) as run:
        assert [batch.device async for batch in run] == ["gpu"]
    assert (on_0.calls, on_1.calls) == (0, 1)


async def test_one_gpu_gateway_is_the_guard_alone() -> None:
    guard = GpuGuard()
    gateway = ModelGateway(FakeBackend(["m"]), guard=guard)
    assert list(gateway.gpus) == [guard]
    with pytest.raises(ConfigError, match="first of gpus"):
        ModelGateway(FakeBackend(["m"]), guard=guard, gpus=two_gpus())


def test_a_resident_model_counts_in_its_own_gpus_budget_only() -> None:
    devices = FakeDevices.with_gpus(80 * 1024, 80 * 1024)
    placement = Placement({"big": 1})
    resident = ResidentModels()
    resident.add("big")
    resident.add("small")  # not placed yet: the first GPU's
    gpus = build_guards(
        load_settings(guard={"scope": "process", "policy": "budget", "name": "res0"}).guard,
        detect=lambda: devices,
        footprints={"big": 10 * GIB, "small": 1 * GIB},
        resident=lambda index: placement.resident_on(resident, index, first=0),
    )
    first, second = gpus[0].memory, gpus[1].memory
    assert first is not None
    assert second is not None
    assert (first.committed_bytes, second.committed_bytes) == (1 * GIB, 10 * GIB)
    placement.set("small", 1)
    assert gpus[0].memory == dataclasses.replace(first, committed_bytes=0, resident={})


async def test_a_load_makes_room_on_its_own_gpu_only(tmp_path: Path) -> None:
    """GPU 0 keeps the least recently used model; GPU 1's load unloads GPU 1's."""
    devices = FakeDevices.with_gpus(24 * 1024, 24 * 1024)
    sizes = {"a": 10 * GIB, "b": 10 * GIB, "c": 14 * GIB}
    book = FootprintBook(tmp_path / "footprints.json", engine="fake", overrides=sizes)
    placement = Placement({"a": 0, "b": 1, "c": 1})
    resident = ResidentModels()
    gpus = build_guards(
        load_settings(guard={"scope": "process", "policy": "budget", "name": "evict0"}).guard,
        detect=lambda: devices,
        footprints=book,
        resident=lambda index: placement.resident_on(resident, index, first=0),
    )
    backend = FakeBackend(list(sizes))
    gateway = ModelGateway(
        backend,
        gpus=gpus,
        model_gpus=placement,
        footprints=FootprintMeter(book, ProcessGpuMemory(devices)),
        resident=resident,
    )
    await gateway.load("a")  # GPU 0: 10 of 22 GiB
    await gateway.load("b")  # GPU 1: 10 of 22 GiB
    await gateway.load("c")  # GPU 1: 10 + 14 > 22: b goes, a (older, on GPU 0) stays
    assert backend.loaded == {"a", "c"}
    await gpus.aclose()
