"""LlamaServerBackend against the real llama-server on the tiny generated model: single-model
mode (load waits for health, chat, llama.cpp's samplers reach the slot, abort erases the busy
slot), and router mode (load and unload through ``/models``). The protocol double
(test_openai_compat.py) stays for what a real server cannot be made to do here: a failed
router load, a hung load."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gpuguard import UnsupportedParameter
from gpuguard.llm import ChatChunk, ChatMessage, ChatOptions, LlamaServerBackend, Timeouts

from ._support import collect
from .real_llama_server import llama_server

pytestmark = pytest.mark.slow

HELLO = [ChatMessage("user", "hello")]
TIMEOUTS = Timeouts(request_s=30, load_s=60, read_s=30, abort_s=10, poll_interval_s=0.05)


def _finish(chunks: list[ChatChunk]) -> list[str]:
    return [chunk.finish_reason for chunk in chunks if chunk.finish_reason]


@pytest.fixture
async def single(tiny_gguf: Path, tmp_path: Path) -> AsyncIterator[tuple[LlamaServerBackend, str]]:
    arguments = ("-m", tiny_gguf, "-c", "512", "-np", "1", "--alias", "tiny")
    async with llama_server(*arguments, log=tmp_path / "llama-server.log") as url:
        backend = LlamaServerBackend(url, timeouts=TIMEOUTS)
        await backend.load("tiny")  # until then a single-model server answers 503 "Loading model"
        yield backend, url
        await backend.aclose()


async def test_single_model_mode_loads_chats_and_cannot_unload(
    single: tuple[LlamaServerBackend, str],
) -> None:
    backend, _ = single
    await backend.load("tiny")
    assert backend.router_mode is False
    assert await backend.list_models() == ["tiny"]
    assert [m.id for m in await backend.loaded_models()] == ["tiny"]
    chunks = await collect(backend.chat("tiny", HELLO, ChatOptions(max_tokens=4, seed=1)))
    assert _finish(chunks) == ["length"]
    assert chunks[-1].usage is not None  # its own last chunk, after the finish
    assert chunks[-1].usage["completion_tokens"] == 4
    with pytest.raises(Exception, match="no unload API"):
        await backend.unload("tiny")


async def test_llama_cpp_samplers_reach_the_slot(single: tuple[LlamaServerBackend, str]) -> None:
    backend, url = single
    samplers = ChatOptions(
        max_tokens=2,
        top_k=7,
        min_p=0.2,
        typical_p=0.9,
        repeat_penalty=1.3,
        repeat_last_n=16,
        mirostat=2,
        mirostat_tau=4.0,
        mirostat_eta=0.2,
        n_keep=3,
    )
    await collect(backend.chat("tiny", HELLO, samplers))
    async with httpx.AsyncClient(base_url=url) as http:
        [slot] = (await http.get("/slots")).json()
    params = slot["params"]
    assert (params["top_k"], params["repeat_last_n"], params["mirostat"], params["n_keep"]) == (
        7,
        16,
        2,
        3,
    )
    for name, value in (("min_p", 0.2), ("typical_p", 0.9), ("repeat_penalty", 1.3)):
        assert params[name] == pytest.approx(value)
    with pytest.raises(UnsupportedParameter):
        await collect(backend.chat("tiny", HELLO, ChatOptions(n=2)))


async def test_abort_closes_the_stream_and_erases_the_busy_slot(
    single: tuple[LlamaServerBackend, str],
) -> None:
    backend, url = single
    stream = backend.chat("tiny", HELLO, ChatOptions(max_tokens=400, seed=1))
    await anext(stream)  # generating: the slot is busy
    await backend.abort("tiny")
    await stream.aclose()
    async with httpx.AsyncClient(base_url=url) as http:
        [slot] = (await http.get("/slots")).json()
    assert slot["is_processing"] is False
    # The slot serves the next chat at once (the random model may end it early: "stop").
    chunks = await collect(backend.chat("tiny", HELLO, ChatOptions(max_tokens=2)))
    assert _finish(chunks) in (["length"], ["stop"])


async def test_router_mode_loads_and_unloads_through_models(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("tiny", "other"):
        shutil.copyfile(tiny_gguf, models / f"{name}.gguf")
    arguments = ("--models-dir", models, "-c", "512", "--models-max", "1")
    async with llama_server(*arguments, log=tmp_path / "router.log") as url:
        backend = LlamaServerBackend(url, timeouts=TIMEOUTS)
        try:
            assert sorted(await backend.list_models()) == ["other", "tiny"]
            assert backend.router_mode is True
            assert await backend.loaded_models() == []
            await backend.load("tiny")
            assert [m.id for m in await backend.loaded_models()] == ["tiny"]
            greedy = ChatOptions(max_tokens=3, top_k=1)  # the same tokens every run: no chance EOS
            chunks = await collect(backend.chat("tiny", HELLO, greedy))
            assert _finish(chunks) == ["length"]
            await backend.unload("tiny")
            assert await backend.loaded_models() == []
            await backend.load("other")  # an unknown model is the router's own 404
            assert [m.id for m in await backend.loaded_models()] == ["other"]
        finally:
            await backend.aclose()
