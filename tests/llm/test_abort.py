"""``LlmBackend.abort``: each backend closes its requests in flight and asks its server to
stop the work where the API allows, bounded in time, never raising for "nothing to stop"."""

from __future__ import annotations

import asyncio

import pytest

from gpuguard import BackendError
from gpuguard.llm import (
    ChatMessage,
    FoundryLocalBackend,
    LlamaServerBackend,
    LmStudioBackend,
    OllamaBackend,
    OpenAICompatBackend,
    Timeouts,
    VllmBackend,
)
from gpuguard.testing import FakeBackend, IntervalRecorder
from gpuguard.testing.foundry_double import FoundryDouble
from gpuguard.testing.ollama_double import OllamaDouble

from ._support import closed_port_url
from .test_openai_compat import GEMMA, LmStudioDouble, RouterDouble, SingleDouble, VllmDouble

LONG = [ChatMessage("user", " ".join(["word"] * 200))]


async def test_ollama_abort_cuts_the_stream_and_unloads(
    ollama: OllamaBackend, ollama_double: OllamaDouble
) -> None:
    ollama_double.token_latency_s = 0.02
    stream = ollama.chat("llama3.2", LONG)
    assert (await anext(stream)).content == "echo:"
    await ollama.abort("llama3.2")  # returns once /api/ps no longer lists the model
    assert ollama_double.loaded == []
    with pytest.raises(BackendError):
        async for _ in stream:
            pass
    await asyncio.to_thread(ollama_double.wait_idle)
    assert ollama_double.tokens_sent < 50
    await ollama.abort("llama3.2")  # nothing loaded, nothing running: a no-op


async def test_foundry_abort_unloads(
    foundry: FoundryLocalBackend, foundry_double: FoundryDouble
) -> None:
    await foundry.load("phi-4-mini")
    await foundry.abort("phi-4-mini")
    assert await foundry.loaded_models() == []
    await foundry.abort("phi-4-mini")


async def test_llama_server_single_mode_waits_for_the_slots_then_erases_them(
    timeouts: Timeouts,
) -> None:
    with SingleDouble() as double:
        double.ready.set()
        double.processing = {1}
        backend = LlamaServerBackend(double.base_url, timeouts=timeouts)
        await backend.load("tiny.gguf")
        aborting = asyncio.create_task(backend.abort("tiny.gguf"))
        await asyncio.to_thread(double.wait_for_requests, "GET /slots", 2)
        assert not aborting.done()  # slot 1 is still generating
        double.processing.clear()  # the server cancelled the task of the client that left
        await aborting
        assert double.erased == [1]
        assert "POST /slots/1?action=erase" in double.requests
        await backend.aclose()


async def test_llama_server_without_slots_endpoint_only_closes(timeouts: Timeouts) -> None:
    with SingleDouble(slots_endpoint=False) as double:
        double.ready.set()
        backend = LlamaServerBackend(double.base_url, timeouts=timeouts)
        await backend.load("tiny.gguf")
        await backend.abort("tiny.gguf")
        assert double.requests.count("GET /slots") == 1
        assert double.erased == []
        await backend.aclose()


async def test_llama_server_slots_that_never_go_idle_give_up_in_time() -> None:
    with SingleDouble() as double:
        double.ready.set()
        double.processing = {0}
        quick = Timeouts(abort_s=0.2, poll_interval_s=0.01)
        backend = LlamaServerBackend(double.base_url, timeouts=quick)
        await backend.load("tiny.gguf")
        await backend.abort("tiny.gguf")  # logged, not raised
        assert double.erased == []
        await backend.aclose()


async def test_llama_server_router_abort_unloads(
    recorder: IntervalRecorder, timeouts: Timeouts
) -> None:
    with RouterDouble(recorder) as double:
        backend = LlamaServerBackend(double.base_url, timeouts=timeouts)
        await backend.load(GEMMA)
        await backend.abort(GEMMA)
        assert double.status[GEMMA]["value"] == "unloaded"
        await backend.abort(GEMMA)
        await backend.aclose()


async def test_vllm_abort_only_closes_requests(
    recorder: IntervalRecorder, timeouts: Timeouts
) -> None:
    with VllmDouble(recorder) as double:
        backend = VllmBackend(double.base_url, timeouts=timeouts)
        await backend.abort(VllmDouble.model)
        assert double.requests == []
        assert not double.sleeping
        await backend.aclose()


async def test_lmstudio_abort_unloads_every_instance(
    recorder: IntervalRecorder, timeouts: Timeouts
) -> None:
    with LmStudioDouble(recorder) as double:
        backend = LmStudioBackend(double.base_url, timeouts=timeouts)
        await backend.load("qwen/qwen3-4b")
        await backend.abort("qwen/qwen3-4b")
        assert double.instances["qwen/qwen3-4b"] == []
        await backend.aclose()


@pytest.mark.parametrize(
    "make",
    [OllamaBackend, LlamaServerBackend, LmStudioBackend, VllmBackend, OpenAICompatBackend],
)
async def test_abort_of_an_unreachable_server_returns_in_time(make: type) -> None:
    backend = make(closed_port_url(), timeouts=Timeouts(abort_s=2, connect_s=1))
    async with asyncio.timeout(10):
        await backend.abort("some-model")
    await backend.aclose()


async def test_the_fake_backend_hangs_until_aborted() -> None:
    backend = FakeBackend(["m"])
    await backend.load("m")
    backend.hang = {"chat"}
    stream = backend.chat("m", [ChatMessage("user", "hi")])
    step = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert not step.done()
    await backend.abort("m")
    with pytest.raises(BackendError, match="aborted"):
        await step
    assert backend.aborts == ["m"]
