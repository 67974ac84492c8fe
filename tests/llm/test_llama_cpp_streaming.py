"""The embedded backend's worker-thread streaming, with a scripted stand-in for
``llama_cpp.Llama`` (no llama.cpp needed): backpressure, stop on close, timeouts, errors."""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gpuguard import BackendError, BackendTimeout, BackendUnavailable
from gpuguard.llm import LlamaCppBackend

from ._support import HELLO, collect


class ScriptedLlama:
    """Streams numbered chunks forever (or raises, or stalls), counting what it made."""

    instances: ClassVar[list[ScriptedLlama]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.produced = 0
        self.closed = threading.Event()
        self.fail_after: int | None = None
        self.stall = threading.Event()  # set: produce; clear: block before the next chunk
        self.stall.set()
        ScriptedLlama.instances.append(self)

    def create_chat_completion(self, **options: Any) -> Iterator[dict[str, Any]]:
        try:
            yield {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
            while True:
                self.stall.wait()
                if self.fail_after is not None and self.produced == self.fail_after:
                    raise RuntimeError("llama_decode returned -1")
                self.produced += 1
                delta = {"content": f"t{self.produced} "}
                yield {"choices": [{"delta": delta, "finish_reason": None}], "model": "m"}
        finally:
            self.closed.set()

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """One token per word (the backend counts the prompt before generating)."""
        return list(range(len(text.split()) + add_bos))

    def close(self) -> None:
        """Free the model."""


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Make ``import llama_cpp`` give the scripted Llama; returns a model path."""
    ScriptedLlama.instances.clear()
    module = types.ModuleType("llama_cpp")
    module.Llama = ScriptedLlama  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", module)
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


async def test_load_passes_the_gpu_options(scripted: Path) -> None:
    backend = LlamaCppBackend(scripted, n_gpu_layers=12, n_ctx=1024)
    await backend.load("model")
    [llama] = ScriptedLlama.instances
    assert llama.options == {
        "model_path": str(scripted),
        "n_gpu_layers": 12,
        "n_ctx": 1024,
        "embedding": False,
        "verbose": False,
    }


async def test_the_worker_runs_at_most_the_buffer_ahead(scripted: Path) -> None:
    backend = LlamaCppBackend(scripted, max_buffered_chunks=4)
    await backend.load("model")
    [llama] = ScriptedLlama.instances
    stream = backend.chat("model", HELLO)
    first = await anext(stream)
    assert first.content == "t1 "
    await stream.aclose()  # returns once the worker has stopped
    assert llama.closed.is_set()
    assert llama.produced <= 4 + 2  # bounded by the credits, not by the (endless) answer


async def test_a_stalled_token_times_out(scripted: Path) -> None:
    backend = LlamaCppBackend(scripted, token_timeout_s=0.1)
    await backend.load("model")
    [llama] = ScriptedLlama.instances
    llama.stall.clear()
    stream = backend.chat("model", HELLO)
    with pytest.raises(BackendTimeout, match="no token within"):
        await anext(stream)
    llama.stall.set()  # the "hung" call returns; the worker sees the stop flag
    await backend.unload("model")  # waits for the straggling worker first
    assert llama.closed.is_set()


async def test_a_call_after_a_hung_worker_times_out_too(scripted: Path) -> None:
    backend = LlamaCppBackend(scripted, token_timeout_s=0.1)
    await backend.load("model")
    [llama] = ScriptedLlama.instances
    llama.stall.clear()
    with pytest.raises(BackendTimeout):
        await collect(backend.chat("model", HELLO))
    with pytest.raises(BackendTimeout, match="still running"):
        await collect(backend.chat("model", HELLO))
    llama.stall.set()
    await backend.aclose()
    assert llama.closed.is_set()


async def test_an_error_in_the_worker_is_a_backend_error(scripted: Path) -> None:
    backend = LlamaCppBackend(scripted)
    await backend.load("model")
    ScriptedLlama.instances[0].fail_after = 3
    with pytest.raises(BackendError, match="llama_decode") as caught:
        await collect(backend.chat("model", HELLO))
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_missing_llama_cpp_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    backend = LlamaCppBackend(path)
    with pytest.raises(BackendUnavailable, match="pip install"):
        await backend.load("model")
    assert not (await backend.health()).ok
