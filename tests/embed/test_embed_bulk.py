from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from gpuguard import (
    ConfigError,
    DimensionMismatch,
    EmbeddingError,
    GpuEvent,
    GpuGuard,
    GpuStatus,
    Priority,
)
from gpuguard.embed import (
    FALLBACK_MESSAGE,
    BulkEmbedder,
    BulkRun,
    EmbeddedBatch,
    EmbedderPair,
    Vectors,
)
from gpuguard.testing import HashEmbedder

TEXTS = [f"text number {i}" for i in range(10)]


class GatedEmbedder(HashEmbedder):
    """A HashEmbedder whose every call announces itself and waits for a permit."""

    def __init__(self, *, device: str, dimension: int = 16) -> None:
        super().__init__(device=device, dimension=dimension)
        self.calls_started: asyncio.Queue[list[str]] = asyncio.Queue()
        self.permits = asyncio.Semaphore(0)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls_started.put_nowait(list(texts))
        await self.permits.acquire()
        return await super().embed(texts)


async def make_bulk(
    guard: GpuGuard,
    *,
    gpu: HashEmbedder | None = None,
    cpu: HashEmbedder | None = None,
    batch_size: int = 32,
    max_in_flight: int = 4,
    side_by_side: bool = False,
) -> BulkEmbedder:
    """A bulk embedder over hash embedders, its models already loaded."""
    pair = EmbedderPair(
        HashEmbedder(device="cuda", dimension=16) if gpu is None else gpu,
        HashEmbedder(device="cpu", dimension=16) if cpu is None else cpu,
    )
    await pair.start(guard)
    return BulkEmbedder(
        pair, guard, batch_size=batch_size, max_in_flight=max_in_flight, side_by_side=side_by_side
    )


def fallback_events(guard: GpuGuard) -> list[GpuEvent]:
    return [
        e
        for e in guard.events.history(kinds={"gpu"})
        if isinstance(e, GpuEvent) and e.status is GpuStatus.FALLBACK
    ]


async def test_batches_come_out_in_input_order_with_their_vectors() -> None:
    guard = GpuGuard()
    bulk = await make_bulk(guard, batch_size=3)
    reference = await HashEmbedder(dimension=16).embed(TEXTS)

    async with bulk.embed_batches(TEXTS) as run:
        batches = [batch async for batch in run]

    assert [b.items for b in batches] == [TEXTS[0:3], TEXTS[3:6], TEXTS[6:9], TEXTS[9:]]
    assert [b.index for b in batches] == [0, 1, 2, 3]
    np.testing.assert_allclose(np.vstack([b.vectors for b in batches]), reference, atol=1e-6)
    assert {b.device for b in batches} == {"gpu"}
    assert not fallback_events(guard)
    assert (run.stats.texts, run.stats.gpu_batches, run.stats.cpu_batches) == (10, 4, 0)
    assert not guard.locked


async def test_without_a_gpu_embedder_everything_runs_on_the_cpu() -> None:
    bulk = BulkEmbedder(EmbedderPair(None, HashEmbedder(dimension=16)), batch_size=4)

    async with bulk.embed_batches(TEXTS) as run:
        devices = [(b.device, b.fallback) async for b in run]

    assert devices == [("cpu", False)] * 3


async def test_busy_gpu_sends_batches_to_the_cpu_and_they_return_when_it_frees(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = GpuGuard()
    bulk = await make_bulk(guard, batch_size=2, max_in_flight=1)
    chat = await guard.acquire("chat", priority=Priority.INTERACTIVE)
    seen: list[EmbeddedBatch[str]] = []

    with caplog.at_level(logging.INFO, logger="gpuguard.embed"):
        async with bulk.embed_batches(TEXTS[:6], operation="rag-indexing") as run:
            async for batch in run:
                seen.append(batch)
                if batch.index == 1:
                    chat.release()  # the GPU frees while the job runs

    assert [(b.device, b.fallback) for b in seen] == [
        ("cpu", True),
        ("cpu", True),
        ("gpu", False),
    ]
    assert [b.items for b in seen] == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:6]]
    events = fallback_events(guard)
    assert [e.operation for e in events] == ["rag-indexing", "rag-indexing"]
    assert all(e.holder == "chat" for e in events)
    assert caplog.messages.count(next(m for m in caplog.messages if FALLBACK_MESSAGE in m)) == 1
    assert run.stats.fallback_batches == 2
    assert run.stats.gpu_batches == 1


async def test_bulk_never_jumps_a_queued_waiter() -> None:
    guard = GpuGuard()
    bulk = await make_bulk(guard, batch_size=2, max_in_flight=1)
    chat = await guard.acquire("chat", priority=Priority.INTERACTIVE)
    load_started = asyncio.Event()
    load_may_finish = asyncio.Event()

    async def model_load() -> None:
        async with guard.hold("llm load"):
            load_started.set()
            await load_may_finish.wait()

    loader = asyncio.create_task(model_load())
    devices: list[str] = []
    async with bulk.embed_batches(TEXTS[:8]) as run:
        async for batch in run:
            devices.append(batch.device)
            if batch.index == 0:
                assert guard.queue_length == 1  # the load is queued: the batch went to the CPU
                chat.release()
                await load_started.wait()
            elif batch.index == 1:
                load_may_finish.set()
                await loader

    assert devices == ["cpu", "cpu", "gpu", "gpu"]


async def test_side_by_side_workers_keep_input_order() -> None:
    guard = GpuGuard()
    gpu, cpu = GatedEmbedder(device="cuda"), GatedEmbedder(device="cpu")
    bulk = await make_bulk(guard, gpu=gpu, cpu=cpu, batch_size=2, side_by_side=True)
    run = bulk.embed_batches(TEXTS[:8])
    collected = asyncio.create_task(_collect(run))

    assert await gpu.calls_started.get() == TEXTS[0:2]
    assert await cpu.calls_started.get() == TEXTS[2:4]
    assert guard.locked  # the GPU worker holds the lease while it embeds
    cpu.permits.release()  # the CPU finishes batch 1 before the GPU finishes batch 0 ...
    assert await cpu.calls_started.get() == TEXTS[4:6]  # ... and takes batch 2
    cpu.permits.release()
    assert await cpu.calls_started.get() == TEXTS[6:8]  # ... and batch 3
    cpu.permits.release()
    gpu.permits.release()
    batches = await collected

    assert [b.items for b in batches] == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:6], TEXTS[6:8]]
    assert [b.device for b in batches] == ["gpu", "cpu", "cpu", "cpu"]
    assert not any(b.fallback for b in batches)
    assert not guard.locked


async def _collect(
    run: BulkRun[str], into: list[EmbeddedBatch[str]] | None = None
) -> list[EmbeddedBatch[str]]:
    """Every batch of ``run`` (also appended to ``into`` as they come)."""
    batches = [] if into is None else into
    async with run:
        async for batch in run:
            batches.append(batch)
    return batches


async def test_memory_is_bounded_by_the_batches_in_flight() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield f"text {pulled}"

    bulk = await make_bulk(GpuGuard(), batch_size=4, max_in_flight=2)
    async with bulk.embed_batches(endless()) as run:
        async for batch in run:
            assert pulled <= (batch.index + 1 + 2 + 1) * 4
            if batch.index == 20:
                break


async def test_leaving_early_stops_the_workers_and_frees_the_gpu() -> None:
    guard = GpuGuard()
    bulk = await make_bulk(guard, batch_size=1)
    before = set(asyncio.all_tasks())
    async with bulk.embed_batches(TEXTS) as run:
        async for _ in run:
            break
    assert set(asyncio.all_tasks()) == before
    assert not guard.locked


class FailingEmbedder(HashEmbedder):
    async def embed(self, texts: Sequence[str]) -> Vectors:
        raise EmbeddingError("device lost")


async def test_a_failing_gpu_batch_fails_the_run_and_releases_the_lease() -> None:
    guard = GpuGuard()
    bulk = await make_bulk(guard, gpu=FailingEmbedder(device="cuda", dimension=16))

    with pytest.raises(EmbeddingError, match="device lost"):
        await _collect(bulk.embed_batches(TEXTS))
    assert not guard.locked
    assert guard.snapshot().counters.failed == 1


async def test_a_failing_input_fails_the_run_after_the_batches_before_it() -> None:
    async def broken() -> AsyncIterator[str]:
        yield "fine"
        raise OSError("disk gone")

    bulk = await make_bulk(GpuGuard(), batch_size=1)
    seen: list[EmbeddedBatch[str]] = []
    with pytest.raises(OSError, match="disk gone"):
        await _collect(bulk.embed_batches(broken()), into=seen)
    assert [batch.items for batch in seen] == [["fine"]]


def test_a_gpu_embedder_without_a_guard_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a guard"):
        BulkEmbedder(EmbedderPair(HashEmbedder(device="cuda"), HashEmbedder()))


def test_declared_dimensions_that_differ_are_refused_at_construction() -> None:
    with pytest.raises(DimensionMismatch, match="384-dimensional vectors but the CPU"):
        EmbedderPair(HashEmbedder(device="cuda", dimension=384), HashEmbedder(dimension=128))


class UndeclaredDimension(HashEmbedder):
    """Like a real engine: the dimension is unknown until the model is loaded."""

    @property
    def dimension(self) -> int:
        return super().dimension if self.loaded else None  # type: ignore[return-value]


async def test_a_dimension_mismatch_found_at_load_is_refused() -> None:
    pair = EmbedderPair(UndeclaredDimension(device="cuda"), HashEmbedder(dimension=128))
    with pytest.raises(DimensionMismatch) as caught:
        await pair.start(GpuGuard())
    assert (caught.value.gpu_dim, caught.value.cpu_dim) == (384, 128)

    gpu = UndeclaredDimension(device="cuda")
    bulk = BulkEmbedder(EmbedderPair(gpu, HashEmbedder(dimension=128)), GpuGuard())
    with pytest.raises(DimensionMismatch):
        await _collect(bulk.embed_batches(TEXTS, batch_size=1))


async def test_batches_run_on_the_cpu_while_the_gpu_model_waits_to_load() -> None:
    guard = GpuGuard()
    gpu = HashEmbedder(device="cuda", dimension=16)
    bulk = BulkEmbedder(
        EmbedderPair(gpu, HashEmbedder(dimension=16)), guard, batch_size=2, max_in_flight=1
    )
    chat = await guard.acquire("chat", priority=Priority.INTERACTIVE)
    watch = guard.events.subscribe(kinds={"gpu"})
    devices: list[str] = []

    async with bulk.embed_batches(TEXTS[:8]) as run:
        async for batch in run:
            devices.append(batch.device)
            if batch.index == 0:
                assert not gpu.loaded
                assert guard.queue_length == 1
                chat.release()
                async for event in watch:
                    assert isinstance(event, GpuEvent)
                    if event.status is GpuStatus.COMPLETED and event.operation != "chat":
                        break

    # Batch 1 may have been sent off before the load finished; every batch after it is
    # sent off after the load completed.
    assert devices[0] == "cpu"
    assert devices[2:] == ["gpu", "gpu"]
    assert gpu.loaded
    assert bulk.pair.gpu_ready
    assert run.stats.fallback_batches == devices.count("cpu")


async def test_the_gpu_model_loads_under_the_guard_at_normal_priority() -> None:
    guard = GpuGuard()
    pair = EmbedderPair(HashEmbedder(device="cuda"), HashEmbedder())

    assert await pair.start(guard) == 384

    started = [
        e
        for e in guard.events.history()
        if isinstance(e, GpuEvent) and e.status is GpuStatus.STARTED
    ]
    assert [(e.operation, e.priority) for e in started] == [("embed-load", Priority.NORMAL)]
