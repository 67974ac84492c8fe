"""Embedding requests are scheduled by their size, one policy for both APIs: a query is
interactive, a mid-size request normal, a bulk one background per batch with CPU fallback."""

from __future__ import annotations

import numpy as np
import ollama

from gpuguard import GpuEvent, GpuGuard, GpuStatus, Priority
from gpuguard.embed import HashEmbedder

from .conftest import EMBEDDER, Live, gpu_held

MANY = [f"text number {i}" for i in range(300)]


def _started(guard: GpuGuard) -> list[tuple[str, Priority]]:
    return [
        (e.operation, e.priority)
        for e in guard.events.history(kinds={"gpu"})
        if isinstance(e, GpuEvent) and e.status == GpuStatus.STARTED
    ]


def _embedders(live: Live) -> tuple[HashEmbedder, HashEmbedder]:
    gpu, cpu = live.gateway.gpu_embedder, live.gateway.cpu_embedder
    assert isinstance(gpu, HashEmbedder)
    assert isinstance(cpu, HashEmbedder)
    return gpu, cpu


async def test_a_one_text_request_is_interactive_and_a_large_one_background(live: Live) -> None:
    await live.client.embeddings.create(model=EMBEDDER, input="what is a lease?")
    assert ("embed", Priority.INTERACTIVE) in _started(live.guard)
    before = len(_started(live.guard))
    response = await live.client.embeddings.create(model=EMBEDDER, input=MANY)
    assert len(response.data) == len(MANY)
    bulk = _started(live.guard)[before:]
    assert bulk  # the GPU was free: the batches ran on it ...
    assert set(bulk) == {("embed-bulk", Priority.BACKGROUND)}  # ... at background priority


async def test_a_mid_size_request_is_normal(live: Live) -> None:
    await live.client.embeddings.create(model=EMBEDDER, input=MANY[:20])
    assert ("embed", Priority.NORMAL) in _started(live.guard)


async def test_the_ollama_routes_follow_the_same_policy(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    await client.embed(model=EMBEDDER, input="one query")
    await client.embeddings(model=EMBEDDER, prompt="another query")
    assert _started(live.guard).count(("embed", Priority.INTERACTIVE)) == 2
    result = await client.embed(model=EMBEDDER, input=MANY)
    assert len(result.embeddings) == len(MANY)
    assert ("embed-bulk", Priority.BACKGROUND) in _started(live.guard)


async def test_a_large_request_while_the_gpu_is_held_runs_on_the_cpu(live: Live) -> None:
    gpu, cpu = _embedders(live)
    await live.client.embeddings.create(model=EMBEDDER, input="load the GPU model")
    gpu_texts, cpu_texts = gpu.texts_embedded, cpu.texts_embedded
    async with gpu_held(live.guard, "a chat"):
        # Answered while the GPU stays held: it never queued for it.
        response = await live.client.embeddings.create(model=EMBEDDER, input=MANY)
    assert len(response.data) == len(MANY)
    assert gpu.texts_embedded == gpu_texts
    assert cpu.texts_embedded == cpu_texts + len(MANY)
    fallbacks = [
        e
        for e in live.guard.events.history(kinds={"gpu"})
        if isinstance(e, GpuEvent) and e.status == GpuStatus.FALLBACK
    ]
    assert fallbacks
    assert {e.holder for e in fallbacks} == {"a chat"}
    # The same vectors as the GPU model gives: one model on both devices.
    again = await live.client.embeddings.create(model=EMBEDDER, input=MANY[:3])
    np.testing.assert_allclose(
        [d.embedding for d in again.data], [d.embedding for d in response.data[:3]], atol=1e-6
    )
