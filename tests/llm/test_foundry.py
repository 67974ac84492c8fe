"""FoundryLocalBackend against the Foundry Local double, both API generations."""

from __future__ import annotations

import asyncio

import pytest

from gpuguard import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
)
from gpuguard.llm import (
    ChatMessage,
    ChatOptions,
    FoundryLocalBackend,
    LlmBackend,
    LoadedModel,
    Timeouts,
)
from gpuguard.testing import HashEmbedder, IntervalRecorder
from gpuguard.testing.foundry_double import FoundryDouble

from ._support import HELLO, closed_port_url, collect, text

EXPECTED_GENERATION = {"legacy": "legacy", "0.10": "0.10+"}


async def test_is_an_llm_backend(foundry: FoundryLocalBackend) -> None:
    assert isinstance(foundry, LlmBackend)
    assert foundry.kind == "foundry"
    assert foundry.supports_embeddings


async def test_detects_the_generation_from_models_loaded(
    foundry: FoundryLocalBackend, foundry_double: FoundryDouble
) -> None:
    assert foundry.generation is None
    health = await foundry.health()
    assert health.ok, health.detail
    assert foundry.generation == EXPECTED_GENERATION[foundry_double.generation]
    assert foundry_double.requests[0] == "GET /models/loaded"
    status_path = "/openai/status" if foundry_double.generation == "legacy" else "/status"
    assert f"GET {status_path}" in foundry_double.requests


async def test_load_chat_unload_round_trip(
    foundry: FoundryLocalBackend, foundry_double: FoundryDouble, recorder: IntervalRecorder
) -> None:
    assert await foundry.list_models() == ["phi-4-mini", "qwen2.5-0.5b"]
    assert await foundry.loaded_models() == []

    await foundry.load("phi-4-mini")
    assert await foundry.loaded_models() == [LoadedModel(id="phi-4-mini")]

    chunks = await collect(foundry.chat("phi-4-mini", HELLO))
    assert text(chunks) == "echo: hello there"
    assert chunks[-1].finish_reason == "stop"

    await foundry.unload("phi-4-mini")
    assert await foundry.loaded_models() == []
    assert foundry_double.loaded == []
    assert [i.what for i in recorder.intervals] == [
        "load phi-4-mini",
        "chat phi-4-mini",
        "unload phi-4-mini",
    ]


async def test_load_and_unload_are_idempotent(
    foundry: FoundryLocalBackend, recorder: IntervalRecorder
) -> None:
    await foundry.load("phi-4-mini")
    await foundry.load("phi-4-mini")
    await foundry.unload("phi-4-mini")
    await foundry.unload("phi-4-mini")
    assert [i.what for i in recorder.intervals] == ["load phi-4-mini", "unload phi-4-mini"]


async def test_max_tokens_and_temperature_are_sent(foundry: FoundryLocalBackend) -> None:
    await foundry.load("phi-4-mini")
    chunks = await collect(
        foundry.chat("phi-4-mini", HELLO, ChatOptions(max_tokens=2, temperature=0.1))
    )
    assert text(chunks) == "echo: hello"
    assert chunks[-1].finish_reason == "length"


async def test_embeddings(foundry: FoundryLocalBackend) -> None:
    await foundry.load("qwen2.5-0.5b")
    vectors = await foundry.embeddings("qwen2.5-0.5b", ["a", "b", "a"])
    assert len(vectors) == 3
    assert len(vectors[0]) == 16
    assert vectors[0] == vectors[2] != vectors[1]


async def test_unknown_model_is_model_not_found(foundry: FoundryLocalBackend) -> None:
    with pytest.raises(ModelNotFound) as caught:
        await foundry.load("no-such-model")
    assert caught.value.model == "no-such-model"
    assert caught.value.status_code == 404
    with pytest.raises(ModelNotFound):
        await collect(foundry.chat("no-such-model", HELLO))


async def test_uncached_model_fails_to_load(
    foundry: FoundryLocalBackend, foundry_double: FoundryDouble
) -> None:
    with pytest.raises(ModelLoadFailed) as caught:
        await foundry.load("uncached-model")
    expected_status = 500 if foundry_double.generation == "legacy" else 400
    assert caught.value.status_code == expected_status
    assert foundry_double.loaded == []


async def test_error_frame_mid_stream_raises_after_the_first_tokens(
    foundry: FoundryLocalBackend, foundry_double: FoundryDouble
) -> None:
    await foundry.load("phi-4-mini")
    foundry_double.fail_stream_after = 2
    stream = foundry.chat("phi-4-mini", HELLO)
    assert [(await anext(stream)).content for _ in range(2)] == ["echo:", " hello"]
    with pytest.raises(BackendProtocolError, match="inference failed"):
        await anext(stream)


async def test_closing_the_stream_stops_generation(
    foundry: FoundryLocalBackend, foundry_double: FoundryDouble
) -> None:
    await foundry.load("phi-4-mini")
    foundry_double.token_latency_s = 0.02
    prompt = [ChatMessage("user", " ".join(["word"] * 200))]
    stream = foundry.chat("phi-4-mini", prompt)
    first = await anext(stream)
    assert first.content == "echo:"
    await stream.aclose()
    await asyncio.to_thread(foundry_double.wait_idle)
    assert foundry_double.tokens_sent < 50


async def test_unreachable_server_is_unavailable_with_its_url(timeouts: Timeouts) -> None:
    url = closed_port_url()
    backend = FoundryLocalBackend(url, timeouts=timeouts)
    with pytest.raises(BackendUnavailable, match=url) as caught:
        await backend.load("phi-4-mini")
    assert caught.value.url is not None
    assert caught.value.url.startswith(url)
    health = await backend.health()
    assert not health.ok
    assert url in health.detail
    await backend.aclose()


async def test_slow_load_times_out(foundry_double: FoundryDouble, timeouts: Timeouts) -> None:
    foundry_double.load_latency_s = 0.5
    backend = FoundryLocalBackend(foundry_double.base_url, timeouts=Timeouts(load_s=0.1))
    with pytest.raises(BackendTimeout) as caught:
        await backend.load("phi-4-mini")
    assert caught.value.model == "phi-4-mini"
    await asyncio.to_thread(foundry_double.wait_idle)
    await backend.aclose()


async def test_stalled_stream_times_out(foundry_double: FoundryDouble, timeouts: Timeouts) -> None:
    backend = FoundryLocalBackend(foundry_double.base_url, timeouts=Timeouts(read_s=0.2))
    await backend.load("phi-4-mini")
    foundry_double.token_latency_s = 2.0
    with pytest.raises(BackendTimeout):
        await collect(backend.chat("phi-4-mini", HELLO))
    await backend.aclose()
    await asyncio.to_thread(foundry_double.wait_idle)


def test_rejects_an_unknown_execution_provider() -> None:
    with pytest.raises(ConfigError, match="execution_provider"):
        FoundryLocalBackend("http://127.0.0.1:1", execution_provider="tpu")


# --- generation-specific quirks ----------------------------------------------------------


@pytest.mark.parametrize("foundry_double", ["legacy"], indirect=True)
async def test_legacy_load_sends_ttl_and_ep_and_unload_forces(
    foundry_double: FoundryDouble, timeouts: Timeouts
) -> None:
    backend = FoundryLocalBackend(
        foundry_double.base_url, timeouts=timeouts, execution_provider="cuda", ttl_s=600
    )
    await backend.load("phi-4-mini")
    await backend.unload("phi-4-mini")
    assert "GET /openai/load/phi-4-mini?ttl=600&ep=cuda" in foundry_double.requests
    assert "GET /openai/unload/phi-4-mini?force=true" in foundry_double.requests
    await backend.aclose()


@pytest.mark.parametrize("foundry_double", ["legacy"], indirect=True)
async def test_legacy_chat_loads_on_demand(
    foundry: FoundryLocalBackend, recorder: IntervalRecorder
) -> None:
    assert text(await collect(foundry.chat("phi-4-mini", HELLO))) == "echo: hello there"
    assert [i.what for i in recorder.intervals] == ["load phi-4-mini", "chat phi-4-mini"]


@pytest.mark.parametrize("foundry_double", ["0.10"], indirect=True)
async def test_modern_chat_on_an_unloaded_model_is_model_not_loaded(
    foundry: FoundryLocalBackend, recorder: IntervalRecorder
) -> None:
    with pytest.raises(ModelNotLoaded) as caught:
        await collect(foundry.chat("phi-4-mini", HELLO))
    assert caught.value.status_code == 400
    with pytest.raises(ModelNotLoaded):
        await foundry.embeddings("phi-4-mini", ["x"])
    assert recorder.intervals == []


# --- GPU-work intervals ------------------------------------------------------------------


async def test_the_double_records_overlapping_gpu_work() -> None:
    """Unguarded, a load during a chat overlaps it, and the recorder sees it."""
    recorder = IntervalRecorder()
    with FoundryDouble(token_latency_s=0.01, recorder=recorder) as double:
        backend = FoundryLocalBackend(double.base_url)
        await backend.load("phi-4-mini")
        stream = backend.chat("phi-4-mini", [ChatMessage("user", "one two three four")])
        await anext(stream)  # the chat is now generating
        await backend.load("qwen2.5-0.5b")
        await collect(stream)
        await backend.aclose()
    overlaps = recorder.overlaps()
    assert [(a.what, b.what) for a, b in overlaps] == [("chat phi-4-mini", "load qwen2.5-0.5b")]


async def test_serialised_backend_and_gpu_embedder_never_overlap(
    foundry: FoundryLocalBackend, recorder: IntervalRecorder
) -> None:
    """A lock standing in for the guard keeps the double's GPU work and a GPU embedder's
    apart; the ``recorder`` fixture fails the test on any overlap."""
    gpu = asyncio.Lock()
    embedder = HashEmbedder(device="cuda", recorder=recorder, delay_s=0.005)

    async def chat() -> None:
        async with gpu:
            await collect(foundry.chat("phi-4-mini", HELLO))

    async def embed() -> None:
        async with gpu:
            await embedder.embed(["some text"])

    async with gpu:
        await foundry.load("phi-4-mini")
    await asyncio.gather(*(op() for _ in range(3) for op in (chat, embed)))
    whos = {i.who for i in recorder.intervals}
    assert whos == {"foundry-double", "embedder:hash-embedder"}
    assert len(recorder.intervals) == 7
