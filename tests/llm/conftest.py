"""Fixtures for the backend tests: protocol doubles sharing one GPU-interval recorder that
must never record overlapping GPU work, fast timeouts, and the tiny GGUF for llama.cpp."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from gpuguard.llm import FoundryLocalBackend, OllamaBackend, Timeouts, write_tiny_gguf
from gpuguard.testing import IntervalRecorder
from gpuguard.testing.foundry_double import FoundryDouble
from gpuguard.testing.ollama_double import OllamaDouble

TOKEN_LATENCY_S = 0.002


@pytest.fixture
def recorder() -> Iterator[IntervalRecorder]:
    """The GPU-work log shared by a test's doubles: no two intervals may overlap."""
    recorder = IntervalRecorder()
    yield recorder
    assert recorder.overlaps() == [], "GPU work overlapped"


@pytest.fixture
def timeouts() -> Timeouts:
    return Timeouts(
        connect_s=2, health_s=2, request_s=5, load_s=5, unload_s=5, read_s=5, poll_interval_s=0.01
    )


@pytest.fixture(params=["legacy", "0.10"])
def foundry_double(
    request: pytest.FixtureRequest, recorder: IntervalRecorder
) -> Iterator[FoundryDouble]:
    """Foundry Local, each generation in turn."""
    with FoundryDouble(
        generation=request.param,
        catalogue=["phi-4-mini", "qwen2.5-0.5b", "uncached-model"],
        cached=["phi-4-mini", "qwen2.5-0.5b"],
        token_latency_s=TOKEN_LATENCY_S,
        recorder=recorder,
    ) as double:
        yield double


@pytest.fixture
async def foundry(
    foundry_double: FoundryDouble, timeouts: Timeouts
) -> AsyncIterator[FoundryLocalBackend]:
    backend = FoundryLocalBackend(foundry_double.base_url, timeouts=timeouts)
    yield backend
    await backend.aclose()


@pytest.fixture
def ollama_double(recorder: IntervalRecorder) -> Iterator[OllamaDouble]:
    with OllamaDouble(token_latency_s=TOKEN_LATENCY_S, recorder=recorder) as double:
        yield double


@pytest.fixture
async def ollama(ollama_double: OllamaDouble, timeouts: Timeouts) -> AsyncIterator[OllamaBackend]:
    backend = OllamaBackend(ollama_double.base_url, timeouts=timeouts)
    yield backend
    await backend.aclose()


@pytest.fixture(scope="session")
def llama_cpp() -> ModuleType:
    """llama-cpp-python: skipped where missing, except under CI=true where that is a failure."""
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("llama-cpp-python must be installed when CI=true")
        pytest.skip("llama-cpp-python is not installed")
    return llama_cpp


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")
