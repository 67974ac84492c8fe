"""Real llama.cpp on the tiny random-weight GGUF: in-process, and as
``python -m llama_cpp.server`` behind the OpenAI-compatible backend."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from gpuguard import BackendError, BackendUnavailable, ModelNotFound, ModelNotLoaded
from gpuguard.llm import (
    ChatMessage,
    ChatOptions,
    LlamaCppBackend,
    LlmBackend,
    LoadedModel,
    OpenAICompatBackend,
    Timeouts,
)

from ._support import HELLO, collect

SERVER_START_TIMEOUT_S = 60.0
pytestmark = pytest.mark.slow


@pytest.fixture
async def embedded(llama_cpp: ModuleType, tiny_gguf: Path) -> AsyncIterator[LlamaCppBackend]:
    backend = LlamaCppBackend(tiny_gguf, n_gpu_layers=0, n_ctx=256, embedding=True)
    yield backend
    await backend.aclose()


async def test_embedded_load_chat_embed_unload(embedded: LlamaCppBackend) -> None:
    assert isinstance(embedded, LlmBackend)
    assert embedded.kind == "llama-cpp"
    assert (await embedded.health()).ok
    assert await embedded.list_models() == ["tiny"]
    assert await embedded.loaded_models() == []

    await embedded.load("tiny")
    await embedded.load("tiny")  # a no-op
    [loaded] = await embedded.loaded_models()
    assert loaded.id == "tiny"

    chunks = await collect(embedded.chat("tiny", HELLO, ChatOptions(max_tokens=6, temperature=0.0)))
    assert chunks, "the random model produced no chunk at all"
    assert chunks[-1].finish_reason in ("length", "stop")

    vectors = await embedded.embeddings("tiny", ["hello", "world"])
    assert [len(v) for v in vectors] == [32, 32]

    await embedded.unload("tiny")
    assert await embedded.loaded_models() == []
    with pytest.raises(ModelNotLoaded):
        await collect(embedded.chat("tiny", HELLO))


async def test_embedded_chat_does_not_block_the_event_loop(embedded: LlamaCppBackend) -> None:
    await embedded.load("tiny")
    ticks = 0
    generating = True

    async def tick() -> None:
        nonlocal ticks
        while generating:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    chunks = await collect(embedded.chat("tiny", HELLO, ChatOptions(max_tokens=64)))
    generating = False
    await ticker
    assert chunks
    assert ticks > len(chunks)  # the loop kept running while tokens were computed


async def test_embedded_closing_the_stream_stops_the_worker(embedded: LlamaCppBackend) -> None:
    await embedded.load("tiny")
    stream = embedded.chat("tiny", [ChatMessage("user", "go on")], ChatOptions(max_tokens=200))
    await anext(stream)
    await stream.aclose()  # returns once the worker thread has stopped
    # The context is free again at once: another call does not wait for 200 tokens.
    started = time.monotonic()
    await collect(embedded.chat("tiny", HELLO, ChatOptions(max_tokens=1)))
    assert time.monotonic() - started < 5


async def test_embedded_errors(llama_cpp: ModuleType, tiny_gguf: Path) -> None:
    backend = LlamaCppBackend(tiny_gguf, n_gpu_layers=0, n_ctx=256)
    assert not backend.supports_embeddings
    with pytest.raises(ModelNotFound):
        await backend.load("other")
    await backend.load("tiny")
    with pytest.raises(BackendError, match="embedding=True"):
        await backend.embeddings("tiny", ["x"])
    await backend.aclose()
    missing = LlamaCppBackend(tiny_gguf.with_name("missing.gguf"))
    with pytest.raises(ModelNotFound, match="does not exist"):
        await missing.load("missing")
    assert not (await missing.health()).ok


# --- python -m llama_cpp.server ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server(
    llama_cpp: ModuleType, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``python -m llama_cpp.server`` on the tiny GGUF; yields its base URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(tiny_gguf),
            "--model_alias",
            "tiny",
            "--n_gpu_layers",
            "0",
            "--n_ctx",
            "256",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within {SERVER_START_TIMEOUT_S}s")
            time.sleep(0.1)  # a real process has no ready event: poll its port, bounded
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
async def server_backend(llama_server: str) -> AsyncIterator[OpenAICompatBackend]:
    backend = OpenAICompatBackend(f"{llama_server}/v1", timeouts=Timeouts(read_s=30))
    yield backend
    await backend.aclose()


async def test_server_health_models_and_load(server_backend: OpenAICompatBackend) -> None:
    assert (await server_backend.health()).ok
    assert await server_backend.list_models() == ["tiny"]
    assert await server_backend.loaded_models() == [LoadedModel(id="tiny")]
    await server_backend.load("tiny")
    with pytest.raises(ModelNotFound, match="does not serve"):
        await server_backend.load("gpt-4o")
    with pytest.raises(BackendError, match="no unload API"):
        await server_backend.unload("tiny")


async def test_server_streams_chat(server_backend: OpenAICompatBackend) -> None:
    chunks = await collect(
        server_backend.chat("tiny", HELLO, ChatOptions(max_tokens=5, temperature=0.0))
    )
    assert chunks
    assert chunks[-1].finish_reason in ("length", "stop")


async def test_server_works_with_the_openai_client(llama_server: str) -> None:
    """The same server through the official client: the wire format we parse is real."""
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(base_url=f"{llama_server}/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    finishes = [chunk.choices[0].finish_reason async for chunk in stream if chunk.choices]
    assert finishes[-1] in ("length", "stop")
    await client.close()


async def test_stopped_server_is_unavailable() -> None:
    backend = OpenAICompatBackend(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnavailable):
        await backend.list_models()
    await backend.aclose()
