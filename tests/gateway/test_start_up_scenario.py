"""The start-up scenario at the gateway level, against each real backend implementation.

Start (prewarm in the background) and at once ask for GPU embeddings. The GPU intervals
recorded by the server double (or around llama.cpp) and by the GPU embedder never overlap,
and the guard's log shows the acquisition order: prewarm, embedding-model load, embedding.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from gpuguard.gateway import ModelGateway
from gpuguard.llm import (
    ChatMessage,
    ChatOptions,
    FoundryLocalBackend,
    LlamaCppBackend,
    LlmBackend,
    OllamaBackend,
    Timeouts,
    write_tiny_gguf,
)
from gpuguard.testing import HashEmbedder, IntervalRecorder
from gpuguard.testing.foundry_double import FoundryDouble
from gpuguard.testing.ollama_double import OllamaDouble

FAST = Timeouts(
    connect_s=2, health_s=2, request_s=5, load_s=10, unload_s=5, read_s=5, poll_interval_s=0.01
)

Scenario = Callable[[IntervalRecorder, Path], AbstractContextManager[tuple[LlmBackend, str]]]


class RecordedLlamaCpp(LlamaCppBackend):
    """The embedded llama.cpp backend with its model load recorded as GPU work."""

    def __init__(self, model_path: Path, recorder: IntervalRecorder) -> None:
        super().__init__(model_path, model_name="tiny", n_gpu_layers=0, n_ctx=256)
        self.recorder = recorder

    async def load(self, model: str) -> None:
        with self.recorder.record("llm:llama-cpp", f"load {model}"):
            await super().load(model)


@contextmanager
def foundry_legacy(recorder: IntervalRecorder, tmp: Path) -> Iterator[tuple[LlmBackend, str]]:
    with FoundryDouble(generation="legacy", load_latency_s=0.05, recorder=recorder) as double:
        yield FoundryLocalBackend(double.base_url, timeouts=FAST), "phi-4-mini"


@contextmanager
def foundry_current(recorder: IntervalRecorder, tmp: Path) -> Iterator[tuple[LlmBackend, str]]:
    with FoundryDouble(generation="0.10", load_latency_s=0.05, recorder=recorder) as double:
        yield FoundryLocalBackend(double.base_url, timeouts=FAST), "phi-4-mini"


@contextmanager
def ollama(recorder: IntervalRecorder, tmp: Path) -> Iterator[tuple[LlmBackend, str]]:
    with OllamaDouble(models=["llama3.2"], load_latency_s=0.05, recorder=recorder) as double:
        yield OllamaBackend(double.base_url, timeouts=FAST), "llama3.2"


@contextmanager
def llama_cpp(recorder: IntervalRecorder, tmp: Path) -> Iterator[tuple[LlmBackend, str]]:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("llama-cpp-python must be installed when CI=true")
        pytest.skip("llama-cpp-python is not installed")
    yield RecordedLlamaCpp(write_tiny_gguf(tmp / "tiny.gguf"), recorder), "tiny"


@pytest.fixture(
    params=[foundry_legacy, foundry_current, ollama, llama_cpp],
    ids=["foundry-legacy", "foundry-0.10", "ollama", "llama-cpp"],
)
def scenario(request: pytest.FixtureRequest) -> Scenario:
    chosen: Scenario = request.param
    return chosen


@pytest.fixture
async def recorder() -> AsyncIterator[IntervalRecorder]:
    recorder = IntervalRecorder()
    yield recorder
    assert recorder.overlaps() == [], "GPU work overlapped"


async def test_prewarm_and_immediate_gpu_embeddings_never_overlap(
    scenario: Scenario,
    recorder: IntervalRecorder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gpuguard.guard")
    with scenario(recorder, tmp_path) as (backend, model):
        gpu = HashEmbedder(device="cuda", delay_s=0.01, recorder=recorder)
        gateway = ModelGateway(backend, model=model, gpu_embedder=gpu, cpu_embedder=HashEmbedder())
        await gateway.start()
        await asyncio.sleep(0)  # one checkpoint: the prewarm task takes the lease
        assert gateway.guard.current is not None
        assert gateway.guard.current.operation == "prewarm"

        vectors = await gateway.embed(["orders by customer", "customers"], use_gpu=True)
        assert gateway.prewarm_task is not None
        await gateway.prewarm_task
        assert vectors.shape == (2, 384)
        assert [interval.what.split()[0] for interval in recorder.intervals] == ["load", "embed"]
        acquired = [
            record.getMessage().split()[1]
            for record in caplog.records
            if record.getMessage().startswith("acquired:")
        ]
        assert acquired == ["op=prewarm", "op=embed-load", "op=embed"]

        answer = await gateway.complete(
            [ChatMessage("user", "hello")], options=ChatOptions(max_tokens=4)
        )
        assert isinstance(answer, str)
        assert gateway.guard.current is None
        await gateway.aclose()
