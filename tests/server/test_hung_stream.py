"""A streamed chat that hangs ends with an error frame and [DONE], through real uvicorn.

The lease of a streamed answer is taken by whichever task reads the first chunk (the request
task when the GPU is free, the response task after a "Waiting for GPU..." notice) and the
rest is read by Starlette's response task: the hang must stop the stream's work there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Sequence

import httpx
import pytest

from gpuguard import FakeClock, GpuGuard
from gpuguard.gateway import GatewayTimeouts, ModelGateway
from gpuguard.llm import ChatChunk, ChatMessage, ChatOptions
from gpuguard.server import create_app, running_server
from gpuguard.settings import LlmSettings, Settings
from gpuguard.testing import FakeBackend, HashEmbedder

from .conftest import MODEL, gpu_held

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}


class StallingBackend(FakeBackend):
    """Streams one token, then never another (a server that stopped answering)."""

    def __init__(self) -> None:
        super().__init__([MODEL])
        self.first_token = asyncio.Event()
        self.stopped = asyncio.Event()

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        yield ChatChunk(content="first", model=model)
        self.first_token.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped.set()
        yield ChatChunk(content="never", model=model)  # pragma: no cover


class Collect(logging.Handler):
    """Keeps uvicorn's error log (uvicorn's loggers do not propagate to pytest's capture)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("gpu_busy_at_start", [False, True])
async def test_a_hung_stream_ends_with_an_error_frame_and_done(gpu_busy_at_start: bool) -> None:
    clock = FakeClock()
    backend = StallingBackend()
    gateway = ModelGateway(
        backend,
        model=MODEL,
        guard=GpuGuard(clock=clock),
        cpu_embedder=HashEmbedder(),
        timeouts=GatewayTimeouts(chat_hold_s=60.0),
    )
    await gateway.load(MODEL)
    app = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    uvicorn_errors = Collect()
    lines: list[str] = []
    async with (
        running_server(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        # After start-up: uvicorn configures its loggers when it starts.
        logging.getLogger("uvicorn.error").addHandler(uvicorn_errors)
        async with gpu_held(gateway.guard) as release:
            if not gpu_busy_at_start:
                release.set()
            async with http.stream("POST", "/v1/chat/completions", json=CHAT) as response:
                assert response.status_code == 200
                release.set()
                reader = aiter(response.aiter_lines())
                while not any('"first"' in line for line in lines):
                    lines.append(await anext(reader))
                await backend.first_token.wait()
                clock.advance(60.0)  # the answer outlives its hold timeout
                lines += [line async for line in reader]
        assert backend.stopped.is_set(), "the backend's stream was never stopped"
        assert gateway.guard.current is None
        assert gateway.guard.snapshot().counters.hung == 1
    frames = [line[6:] for line in lines if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])["error"]
    assert (error["type"], error["code"]) == ("timeout", "gpu_operation_hung")
    assert "hold timeout" in error["message"]
    logging.getLogger("uvicorn.error").removeHandler(uvicorn_errors)
    assert uvicorn_errors.messages == []
    await gateway.aclose()
