"""Streaming chat: the "Waiting for GPU..." notice, and a departed client frees the GPU."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx

from gpuguard import GpuEvent, GpuStatus
from gpuguard.llm import ChatChunk, ChatMessage, ChatOptions
from gpuguard.testing import FakeBackend

from .conftest import MODEL, Live, LiveFactory, gpu_held

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


async def test_waiting_notice_then_the_answer(live: Live) -> None:
    async with (
        gpu_held(live.guard) as release,
        live.http.stream("POST", "/v1/chat/completions", json=CHAT) as response,
    ):
        assert response.status_code == 200
        stream = frames(response)
        role = await anext(stream)
        assert role["choices"][0]["delta"] == {"role": "assistant"}
        notice = await anext(stream)
        assert notice["gpuguard"]["status"] == "waiting"
        assert notice["gpuguard"]["message"] == "Waiting for GPU... (held by test-holder)"
        assert notice["choices"][0]["delta"] == {"content": ""}
        release.set()
        text = "".join([f["choices"][0]["delta"].get("content", "") async for f in stream])
    assert text == "echo: hi"


async def test_the_openai_client_ignores_the_notice(live: Live) -> None:
    async with gpu_held(live.guard) as release:
        stream = await live.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        release.set()
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == "echo: hi"


class EndlessBackend(FakeBackend):
    """Streams two tokens, then stays busy until closed; ``first_token`` marks the first."""

    def __init__(self) -> None:
        super().__init__([MODEL])
        self.first_token = asyncio.Event()
        self.closed = asyncio.Event()

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        try:
            yield ChatChunk(content="tok ", model=model)
            self.first_token.set()
            yield ChatChunk(content="tok ", model=model)
            await asyncio.Event().wait()  # generating until the client goes away
        finally:
            self.closed.set()


async def test_client_leaving_mid_stream_frees_the_gpu(make_live: LiveFactory) -> None:
    backend = EndlessBackend()
    async with make_live(backend=backend) as live:
        subscription = live.guard.events.subscribe(kinds={"gpu"})
        async with live.http.stream("POST", "/v1/chat/completions", json=CHAT) as response:
            stream = frames(response)
            await anext(stream)
            await anext(stream)
            assert live.guard.current is not None
            assert live.guard.current.operation == "chat"
        # the client hung up: the server must close the stream and release the lease
        await backend.closed.wait()
        outcome = None
        async for event in subscription:
            assert isinstance(event, GpuEvent)
            if event.operation == "chat" and event.status is not GpuStatus.STARTED:
                outcome = event.status
                break
        assert outcome is GpuStatus.CANCELLED
        assert live.guard.current is None


async def test_client_leaving_while_waiting_leaves_the_queue(live: Live) -> None:
    subscription = live.guard.events.subscribe(kinds={"gpu"})
    async with gpu_held(live.guard):
        async with live.http.stream("POST", "/v1/chat/completions", json=CHAT) as response:
            stream = frames(response)
            await anext(stream)
            await anext(stream)  # the waiting notice: the chat is queued
            assert live.guard.queue_length == 1
        async for event in subscription:
            assert isinstance(event, GpuEvent)
            if event.operation == "chat" and event.status is GpuStatus.CANCELLED:
                break
        assert live.guard.queue_length == 0
    assert live.guard.current is None
