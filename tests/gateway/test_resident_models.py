"""Models kept resident on a big GPU: counted, evicted by the budget only when a load needs it.

A fake GPU (24 GiB, 2 GiB headroom: a 22 GiB budget) whose memory for this process grows
when the fake backend or the fake GPU embedder loads a model and shrinks when it unloads.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from gpuguard import FakeClock, GpuGuard, ModelEvent, Priority
from gpuguard.devices import FakeDevices, FootprintBook, ProcessGpuMemory
from gpuguard.embed.hashing import HashEmbedder
from gpuguard.gateway import FootprintMeter, ModelGateway, ResidentModels
from gpuguard.guard.policies import Budget
from gpuguard.guard.scopes.local import LocalArbiter
from gpuguard.llm import ChatChunk, ChatMessage
from gpuguard.testing import FakeBackend

from ..guard._support import until

GIB = 1024**3
SIZES = {"m1": 10 * GIB, "m2": 8 * GIB, "m3": 8 * GIB, "huge": 2 * GIB}
EMBEDDER = "gpu-embedder"


class GpuBackend(FakeBackend):
    """A fake whose loads take ``SIZES[model]`` of this process's memory on the fake GPU."""

    def __init__(self, devices: FakeDevices) -> None:
        super().__init__(tuple(SIZES))
        self.devices = devices

    async def load(self, model: str) -> None:
        fresh = model not in self.loaded
        await super().load(model)
        if fresh:
            self.devices.allocate(0, os.getpid(), SIZES[model])

    async def unload(self, model: str) -> None:
        gone = model in self.loaded
        await super().unload(model)
        if gone:
            self.devices.allocate(0, os.getpid(), -SIZES[model])


class GpuEmbedder(HashEmbedder):
    """A hash embedder whose model takes ``size`` on the fake GPU while loaded."""

    def __init__(self, devices: FakeDevices, size: int) -> None:
        super().__init__(name=EMBEDDER, device="cuda")
        self.devices, self.size = devices, size

    async def load(self) -> int:
        fresh = not self.loaded
        dimension = await super().load()
        if fresh:
            self.devices.allocate(0, os.getpid(), self.size)
        return dimension

    async def aclose(self) -> None:
        if self.loaded:
            self.devices.allocate(0, os.getpid(), -self.size)
        await super().aclose()


class Rig:
    """A budget guard, a footprint book on disk and a gateway sharing its resident record."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        embedder_gib: int = 6,
        priorities: dict[str, Priority] | None = None,
        total_mib: int = 24 * 1024,
    ) -> None:
        self.devices = FakeDevices.with_gpus(total_mib)
        self.book = FootprintBook(tmp_path / "footprints.json", engine="fake")
        self.book.assign(EMBEDDER, engine="hash")
        resident = ResidentModels()
        policy = Budget(
            lambda: self.devices.info(0),
            headroom_bytes=2 * GIB,
            footprints=self.book,
            resident=resident,
        )
        arbiter = LocalArbiter(aging_s=None, policy=policy, clock=FakeClock())
        self.guard = GpuGuard(clock=FakeClock(), arbiter=arbiter, wait_timeout=None)
        self.backend = GpuBackend(self.devices)
        self.gateway = ModelGateway(
            self.backend,
            model="m1",
            guard=self.guard,
            gpu_embedder=GpuEmbedder(self.devices, embedder_gib * GIB),
            cpu_embedder=HashEmbedder(name="cpu-embedder"),
            chat_priorities=priorities,
            footprints=FootprintMeter(self.book, ProcessGpuMemory(self.devices)),
            resident=resident,
        )
        self.events = self.guard.events.subscribe(kinds=["model"])

    def unloads(self) -> list[tuple[str, str]]:
        """The ``unloaded`` model events so far, with their reasons."""
        return [
            (e.model, e.detail)
            for e in self.events.drain()
            if isinstance(e, ModelEvent) and e.status == "unloaded"
        ]


def evictions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "to make room for" in r.getMessage()]


async def first_chunk(stream: AsyncGenerator[object, None]) -> None:
    """Advance ``stream`` to its first chunk of the answer: its lease is held from then."""
    async for item in stream:
        if isinstance(item, ChatChunk):
            return


HELLO = [ChatMessage(role="user", content="hello there")]


async def test_an_embedding_load_that_fits_keeps_the_chat_model_and_both_are_counted(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    await rig.gateway.complete(HELLO)  # m1 loads: 10 GiB
    await rig.gateway.load_gpu_embedder()  # 10 + 6 <= 22: beside it
    assert rig.backend.loaded == {"m1"}
    assert rig.unloads() == []
    memory = rig.guard.snapshot().memory
    assert memory is not None
    assert memory.resident == {"m1": 10 * GIB, EMBEDDER: 6 * GIB}
    assert memory.committed_bytes == 16 * GIB
    assert rig.guard.snapshot().to_dict()["memory"]["resident_bytes"] == 16 * GIB


async def test_a_load_that_does_not_fit_unloads_the_least_recently_used_idle_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    rig.book.remember("m3", 8 * GIB)  # measured by an earlier run
    await rig.gateway.load("m1")
    await rig.gateway.load("m2")
    await rig.gateway.complete(HELLO, model="m1")  # m2 is now the least recently used
    rig.unloads()
    with caplog.at_level(logging.INFO, logger="gpuguard.gateway"):
        await rig.gateway.load("m3")  # 10 + 8 + 8 > 22: one of them must go
    assert rig.backend.loaded == {"m1", "m3"}
    assert evictions(caplog) == ["unloaded 'm2' (8192 MiB) to make room for 'm3'"]
    assert rig.unloads() == [("m2", "to make room for 'm3'")]
    memory = rig.guard.snapshot().memory
    assert memory is not None
    assert set(memory.resident) == {"m1", "m3"}


async def test_a_model_serving_a_stream_is_never_unloaded(tmp_path: Path) -> None:
    rig = Rig(tmp_path, priorities={"m1": Priority.BACKGROUND})  # m1 would go first...
    rig.book.remember("m3", 8 * GIB)
    await rig.gateway.load("m1")
    await rig.gateway.load("m2")
    stream = rig.gateway.chat(HELLO, model="m1")
    await first_chunk(stream)  # ...but it streams, holding the GPU
    load = asyncio.create_task(rig.gateway.load("m3"))  # beside the stream: m2 makes room
    await until(load.done)
    await load
    assert rig.backend.loaded == {"m1", "m3"}
    assert [h.operation for h in rig.guard.snapshot().holders] == ["chat"]
    await stream.aclose()


async def test_the_lowest_chat_priority_goes_first_then_the_least_recently_used(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, priorities={"m2": Priority.BACKGROUND})
    rig.book.remember("m3", 8 * GIB)
    await rig.gateway.load("m2")
    await rig.gateway.load("m1")
    await rig.gateway.complete(HELLO, model="m2")  # m1 is older, but m2 chats in background
    await rig.gateway.load("m3")
    assert rig.backend.loaded == {"m1", "m3"}


async def test_an_llm_load_may_unload_the_idle_gpu_embedding_model(tmp_path: Path) -> None:
    rig = Rig(tmp_path, embedder_gib=8)
    await rig.gateway.load("m1")
    await rig.gateway.load_gpu_embedder()
    await rig.gateway.complete(HELLO, model="m1")  # the embedder is the least recently used
    rig.book.remember("m2", 8 * GIB)
    await rig.gateway.load("m2")  # 10 + 8 + 8 > 22
    assert rig.backend.loaded == {"m1", "m2"}
    assert rig.gateway.embedders is not None
    assert not rig.gateway.embedders.gpu_ready
    assert (EMBEDDER, "to make room for 'm2'") in rig.unloads()
    await rig.gateway.embed(["again"])  # it loads again on next use, making room in turn
    assert rig.gateway.embedders.gpu_ready


async def test_a_load_too_big_even_with_everything_unloaded_unloads_nothing_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    rig.devices.allocate(0, 1, 10 * GIB)  # another program's
    rig.book.remember("huge", 13 * GIB)  # 10 + 13 > 22 even with m1 gone
    await rig.gateway.load("m1")
    with caplog.at_level(logging.INFO, logger="gpuguard.gateway"):
        await rig.gateway.load("huge")
    assert rig.backend.loaded == {"m1", "huge"}
    assert evictions(caplog) == []
    assert any("nothing unloaded" in r.getMessage() for r in caplog.records)


async def test_under_the_exclusive_policy_nothing_is_unloaded_to_make_room(
    tmp_path: Path,
) -> None:
    devices = FakeDevices.with_gpus(40 * 1024)
    book = FootprintBook(tmp_path / "footprints.json", engine="fake")
    book.remember("m3", 8 * GIB)
    gateway = ModelGateway(
        GpuBackend(devices),
        guard=GpuGuard(clock=FakeClock(), wait_timeout=None),
        footprints=FootprintMeter(book, ProcessGpuMemory(devices)),
    )
    for model in ("m1", "m2", "m3"):  # 26 GiB: more than a 24 GiB budget, never asked
        await gateway.load(model)
    assert {m.id for m in await gateway.models() if m.loaded} == {"m1", "m2", "m3"}


async def test_the_gpu_embedding_models_footprint_is_measured_and_kept_across_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    with caplog.at_level(logging.INFO, logger="gpuguard.gateway"):
        await rig.gateway.load_gpu_embedder()
    assert rig.book.measured(EMBEDDER) == 6 * GIB
    assert any(f"loaded {EMBEDDER!r}" in r.getMessage() for r in caplog.records)
    restarted = FootprintBook(rig.book.path, engine="fake")
    restarted.assign(EMBEDDER, engine="hash")
    assert restarted[EMBEDDER] == 6 * GIB
    assert FootprintBook(rig.book.path, engine="hash")[EMBEDDER] == 6 * GIB  # its engine's
    assert EMBEDDER not in FootprintBook(rig.book.path, engine="fake")  # not the LLM's


async def test_an_embedding_load_that_does_not_fit_unloads_an_idle_llm(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.book.remember(EMBEDDER, 6 * GIB)  # known from an earlier run
    await rig.gateway.load("m1")
    await rig.gateway.load("m2")
    await rig.gateway.complete(HELLO, model="m1")
    await rig.gateway.load_gpu_embedder()  # 10 + 8 + 6 > 22: m2, the idle one, goes
    assert rig.backend.loaded == {"m1"}
    assert rig.gateway.embedders is not None
    assert rig.gateway.embedders.gpu_ready


async def test_a_background_prewarm_that_does_not_fit_unloads_nothing_and_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    rig.book.remember("m3", 8 * GIB)
    await rig.gateway.load("m1")
    await rig.gateway.load("m2")
    with caplog.at_level(logging.INFO, logger="gpuguard.gateway"):
        await rig.gateway.prewarm("m3")  # not the current model: it may not evict
    assert rig.backend.loaded == {"m1", "m2"}
    assert any("not prewarming 'm3'" in r.getMessage() for r in caplog.records)
    await rig.gateway.prewarm("m1")  # the current one, resident: nothing to do but load
    assert rig.backend.loaded == {"m1", "m2"}
