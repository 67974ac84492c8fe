"""The GPU embedder in a worker process: the real MiniLM (on the CPU here), killed by
``abort()`` mid-batch and restarted on the next call; crashes are embedding errors.
(A factory that fails to build is covered with light engines in tests/worker.)"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gpuguard import ConfigError, EmbeddingError, WorkerCrashed, WorkerKilled
from gpuguard.embed import (
    DEFAULT_MODEL,
    Embedder,
    FastEmbedEmbedder,
    ProcessEmbedder,
    SentenceTransformerEmbedder,
    create_embedder,
)
from gpuguard.testing import HashEmbedder

from .._processes import gone

TEXTS = ["The cat sat on the mat.", "A kitten rests on a rug.", "Quarterly tax filing deadline."]


@pytest.fixture(scope="module")
def minilm_process() -> Iterator[ProcessEmbedder]:
    """One worker for the module (MiniLM takes seconds to load); each test's loop uses it."""
    embedder = create_embedder("sentence-transformers", device="cpu", process=True)
    assert isinstance(embedder, ProcessEmbedder)
    yield embedder
    asyncio.run(embedder.aclose())


async def test_the_process_embedder_matches_the_in_thread_engine(
    minilm_process: ProcessEmbedder, minilm_cpu: SentenceTransformerEmbedder
) -> None:
    assert isinstance(minilm_process, Embedder)
    assert minilm_process.name == DEFAULT_MODEL
    assert minilm_process.device == "cpu"
    assert await minilm_process.load() == 384
    assert minilm_process.worker.pid not in (None, os.getpid())
    vectors = await minilm_process.embed(TEXTS)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, await minilm_cpu.embed(TEXTS), atol=1e-5)
    assert (await minilm_process.embed([])).shape == (0, 384)


async def test_abort_kills_the_worker_mid_batch_and_the_next_call_reloads(
    minilm_process: ProcessEmbedder,
) -> None:
    await minilm_process.load()
    pid = minilm_process.worker.pid
    assert pid is not None
    batch = asyncio.ensure_future(minilm_process.embed(["long text " * 200] * 2000))
    await asyncio.sleep(0)  # the batch is on its way to the worker
    await minilm_process.abort()
    assert gone(pid)
    with pytest.raises(EmbeddingError) as caught:
        await batch
    assert isinstance(caught.value.__cause__, WorkerKilled)
    assert minilm_process.loaded  # reloaded on demand
    assert (await minilm_process.embed(TEXTS[:1])).shape == (1, 384)
    assert minilm_process.worker.pid not in (None, pid)


async def test_a_crashed_worker_is_an_embedding_error_then_restarts(
    minilm_process: ProcessEmbedder,
) -> None:
    await minilm_process.load()
    pid = minilm_process.worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    with pytest.raises(EmbeddingError, match="SIGKILL") as caught:
        await minilm_process.embed(["x"] * 20000)
    assert isinstance(caught.value.__cause__, WorkerCrashed)
    assert not minilm_process.worker.alive  # the next call restarts it, as after an abort


async def test_fastembed_runs_in_a_worker_too(onnx_dir: Path) -> None:
    in_thread = FastEmbedEmbedder(model_path=onnx_dir, device="cpu")
    in_worker = create_embedder("fastembed", model=str(onnx_dir), device="cpu", process=True)
    assert isinstance(in_worker, ProcessEmbedder)
    assert in_worker.name == in_thread.name
    try:
        expected = await in_thread.embed(TEXTS)
        np.testing.assert_allclose(await in_worker.embed(TEXTS), expected, atol=1e-5)
    finally:
        await in_worker.aclose()
        await in_thread.aclose()


def test_only_local_engines_run_in_a_process() -> None:
    with pytest.raises(ConfigError, match="worker process"):
        ProcessEmbedder("remote", name="x")
    assert isinstance(create_embedder("hash", process=True), HashEmbedder)


async def test_in_thread_and_remote_abort_do_not_raise(
    minilm_cpu: SentenceTransformerEmbedder,
) -> None:
    await minilm_cpu.abort()  # nothing to stop: a no-op
    fake = HashEmbedder()
    await fake.abort()
    assert fake.aborts == 1
