"""The lease is held until GPU work has really stopped: embeddings, bulk batches, hung holders.

The GPU embedder here encodes in a real worker thread that only returns when the test says
so, like a CUDA kernel nobody can interrupt.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from gpuguard import FakeClock, GpuGuard, OperationHung, Priority
from gpuguard.embed import BulkEmbedder, BulkRun, EmbeddedBatch, EmbedderPair, Vectors
from gpuguard.gateway import ModelGateway
from gpuguard.testing import FakeBackend, HashEmbedder


class GatedEmbedder(HashEmbedder):
    """A GPU embedder whose encode blocks its thread until :attr:`gate` is set."""

    def __init__(self) -> None:
        super().__init__(name="gated", device="cuda")
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.running = 0
        self.overlaps = 0

    def _encode_sync(self, texts: list[str]) -> Vectors:
        self.running += 1
        self.overlaps = max(self.overlaps, self.running)
        self.entered.set()
        try:
            self.gate.wait(timeout=30)
            return super()._encode_sync(texts)
        finally:
            self.running -= 1


async def _first_batch(run: BulkRun[str]) -> EmbeddedBatch[str]:
    return await anext(aiter(run))


async def _until_thread(event: threading.Event) -> None:
    """Wait (off the loop) for a thread to reach a point: evidence, not time."""
    assert await asyncio.to_thread(event.wait, 30)


async def test_a_cancelled_embedding_keeps_the_gpu_until_its_encode_ends() -> None:
    gpu = GatedEmbedder()
    gateway = ModelGateway(FakeBackend(["m"]), gpu_embedder=gpu, cpu_embedder=HashEmbedder())
    await gateway.load_gpu_embedder()
    request = asyncio.create_task(gateway.embed(["a client that goes away"]))
    await _until_thread(gpu.entered)
    request.cancel()  # the client disconnected
    await asyncio.sleep(0)
    request.cancel()  # and the server shut down meanwhile
    for _ in range(5):
        await asyncio.sleep(0)
    assert gateway.guard.locked, "the GPU was freed while the encode still ran"
    gpu.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert gateway.guard.current is None


async def test_a_hung_bulk_batch_keeps_the_gpu_quarantined_until_its_encode_ends() -> None:
    clock = FakeClock()
    guard = GpuGuard(clock=clock, hold_timeout=5.0)
    gpu = GatedEmbedder()
    pair = EmbedderPair(gpu, HashEmbedder(name="gated"))
    await pair.start(guard)
    bulk = BulkEmbedder(pair, guard, batch_size=1)
    run = bulk.embed_batches(["one batch"])
    consumer = asyncio.create_task(_first_batch(run))
    await _until_thread(gpu.entered)
    chat = asyncio.create_task(guard.acquire("chat", priority=Priority.INTERACTIVE))
    await asyncio.sleep(0)
    clock.advance(5.0)  # the batch is now hung
    for _ in range(5):
        await asyncio.sleep(0)
    current = guard.current
    assert current is not None
    assert (current.operation, current.hung) == ("bulk-embedding", True)
    assert not chat.done(), "the next holder started while the hung encode still ran"
    gpu.gate.set()
    lease = await chat
    assert gpu.running == 0, "chat was granted while the encode still ran"
    lease.release()
    with pytest.raises(OperationHung):
        await consumer
    await run.aclose()


async def test_bulk_batches_get_the_embedding_hold_limit_not_the_guard_default() -> None:
    clock = FakeClock()
    guard = GpuGuard(clock=clock, hold_timeout=900.0)
    gpu = GatedEmbedder()
    pair = EmbedderPair(gpu, HashEmbedder(name="gated"))
    await pair.start(guard)
    bulk = BulkEmbedder(pair, guard, batch_size=1, hold_timeout=5.0)
    run = bulk.embed_batches(["one batch"])
    consumer = asyncio.create_task(_first_batch(run))
    await _until_thread(gpu.entered)
    clock.advance(5.0)
    assert guard.current is not None
    assert guard.current.hung
    gpu.gate.set()
    with pytest.raises(OperationHung):
        await consumer
    await run.aclose()
