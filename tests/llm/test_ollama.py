"""OllamaBackend against the Ollama double."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gpuguard import (
    BackendBusy,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ModelLoadFailed,
    ModelNotFound,
)
from gpuguard.llm import ChatMessage, ChatOptions, LlmBackend, OllamaBackend, Timeouts
from gpuguard.testing import IntervalRecorder
from gpuguard.testing.ollama_double import OllamaDouble

from ._support import HELLO, closed_port_url, collect, text


async def test_is_an_llm_backend(ollama: OllamaBackend) -> None:
    assert isinstance(ollama, LlmBackend)
    assert ollama.kind == "ollama"
    health = await ollama.health()
    assert health.ok
    assert "0.12.0" in health.detail


async def test_load_reports_size_vram_and_unload_waits_until_gone(
    ollama: OllamaBackend, ollama_double: OllamaDouble, recorder: IntervalRecorder
) -> None:
    assert await ollama.list_models() == ["llama3.2:latest", "nomic-embed-text:latest"]
    await ollama.load("llama3.2")
    [loaded] = await ollama.loaded_models()
    assert loaded.id == "llama3.2:latest"
    assert loaded.vram_bytes == 1 << 30
    assert loaded.details["expires_at"].startswith("2318")  # keep_alive -1: until unloaded

    await ollama.unload("llama3.2")
    assert ollama_double.loaded == []
    assert await ollama.loaded_models() == []
    assert [i.what for i in recorder.intervals] == [
        "load llama3.2:latest",
        "unload llama3.2:latest",
    ]


async def test_unload_is_asynchronous_on_the_server(
    ollama: OllamaBackend, ollama_double: OllamaDouble
) -> None:
    """The raw API answers before the model leaves /api/ps; the backend waits for it."""
    await ollama.load("llama3.2")
    ollama_double.unload_gate.clear()
    async with httpx.AsyncClient(base_url=ollama_double.base_url) as raw:
        answer = await raw.post("/api/generate", json={"model": "llama3.2", "keep_alive": 0})
        assert answer.json()["done_reason"] == "unload"
        still = (await raw.get("/api/ps")).json()["models"]
        assert [m["name"] for m in still] == ["llama3.2:latest"]

    polls = ollama_double.requests.count("GET /api/ps")
    unloading = asyncio.create_task(ollama.unload("llama3.2"))
    # The backend keeps polling /api/ps while the model is still listed there.
    await asyncio.to_thread(ollama_double.wait_for_requests, "GET /api/ps", polls + 2)
    assert not unloading.done()
    ollama_double.unload_gate.set()
    await unloading
    assert ollama_double.loaded == []


async def test_chat_streams_ndjson_and_keeps_the_model_alive(
    ollama: OllamaBackend, ollama_double: OllamaDouble
) -> None:
    await ollama.load("llama3.2")
    chunks = await collect(
        ollama.chat("llama3.2", HELLO, ChatOptions(max_tokens=5, temperature=0.2))
    )
    assert text(chunks) == "echo: hello there"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    # Every request carries keep_alive, or Ollama would reset it to 5 minutes.
    assert ollama_double.keep_alives == [("/api/generate", -1), ("/api/chat", -1)]


async def test_embeddings(ollama: OllamaBackend, ollama_double: OllamaDouble) -> None:
    vectors = await ollama.embeddings("nomic-embed-text", ["a", "b"])
    assert [len(v) for v in vectors] == [16, 16]
    assert ollama_double.loaded == ["nomic-embed-text:latest"]


async def test_unknown_model_is_model_not_found(ollama: OllamaBackend) -> None:
    with pytest.raises(ModelNotFound, match="try pulling it first"):
        await ollama.load("mistral")
    with pytest.raises(ModelNotFound):
        await collect(ollama.chat("mistral", HELLO))
    with pytest.raises(ModelNotFound):
        await ollama.unload("mistral")


async def test_busy_server_is_backend_busy(
    ollama: OllamaBackend, ollama_double: OllamaDouble
) -> None:
    ollama_double.busy = True
    with pytest.raises(BackendBusy, match="server busy") as caught:
        await collect(ollama.chat("llama3.2", HELLO))
    assert caught.value.status_code == 503
    with pytest.raises(BackendBusy):
        await ollama.load("llama3.2")


async def test_error_line_mid_stream_raises(
    ollama: OllamaBackend, ollama_double: OllamaDouble
) -> None:
    ollama_double.fail_stream_after = 1
    stream = ollama.chat("llama3.2", HELLO)
    assert (await anext(stream)).content == "echo:"
    with pytest.raises(BackendProtocolError, match="error was encountered") as caught:
        await anext(stream)
    assert caught.value.status_code is None  # it came in a 200 stream


async def test_closing_the_stream_stops_generation(
    ollama: OllamaBackend, ollama_double: OllamaDouble
) -> None:
    ollama_double.token_latency_s = 0.02
    stream = ollama.chat("llama3.2", [ChatMessage("user", " ".join(["word"] * 200))])
    assert (await anext(stream)).content == "echo:"
    await stream.aclose()
    await asyncio.to_thread(ollama_double.wait_idle)
    assert ollama_double.tokens_sent < 50


async def test_unload_that_never_completes_fails_in_time(
    ollama_double: OllamaDouble,
) -> None:
    backend = OllamaBackend(
        ollama_double.base_url, timeouts=Timeouts(unload_s=0.1, poll_interval_s=0.01)
    )
    await backend.load("llama3.2")
    ollama_double.unload_gate.clear()
    with pytest.raises(ModelLoadFailed, match="still in /api/ps"):
        await backend.unload("llama3.2")
    ollama_double.unload_gate.set()
    await asyncio.to_thread(ollama_double.wait_idle)
    await backend.aclose()


async def test_slow_load_times_out(ollama_double: OllamaDouble) -> None:
    ollama_double.load_latency_s = 0.5
    backend = OllamaBackend(ollama_double.base_url, timeouts=Timeouts(load_s=0.1))
    with pytest.raises(BackendTimeout):
        await backend.load("llama3.2")
    await asyncio.to_thread(ollama_double.wait_idle)
    await backend.aclose()


async def test_unreachable_server_is_unavailable_with_its_url() -> None:
    url = closed_port_url()
    backend = OllamaBackend(url)
    with pytest.raises(BackendUnavailable, match=url):
        await backend.loaded_models()
    assert not (await backend.health()).ok
    await backend.aclose()
