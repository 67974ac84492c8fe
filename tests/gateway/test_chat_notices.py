"""A chat that waited for the GPU says when it got it, before its first token."""

from __future__ import annotations

import asyncio

from gpuguard.gateway import GpuWaiting, ModelGateway
from gpuguard.llm import ChatChunk, ChatMessage
from gpuguard.testing import FakeBackend

HELLO = [ChatMessage("user", "hello there")]


async def test_the_wait_ends_with_a_granted_notice_before_the_answer() -> None:
    backend = FakeBackend(["m1"])
    gateway = ModelGateway(backend, model="m1")
    await gateway.load("m1")
    holder = await gateway.guard.acquire("rag-indexing", model="m1")
    stream = gateway.chat(HELLO)
    waiting = await anext(stream)
    assert isinstance(waiting, GpuWaiting)
    assert (waiting.status, waiting.message) == (
        "waiting",
        "Waiting for GPU... (held by rag-indexing)",
    )
    granted_next = asyncio.ensure_future(anext(stream))
    holder.release()
    granted = await granted_next
    assert isinstance(granted, GpuWaiting)
    assert granted.status == "granted"
    assert granted.granted_after_s is not None
    assert granted.message.startswith("Got the GPU after ")
    assert gateway.guard.current is not None  # the chat holds the GPU from here on
    rest = [item async for item in stream]
    assert all(isinstance(item, ChatChunk) for item in rest)
    assert "".join(item.content for item in rest if isinstance(item, ChatChunk)) == (
        "echo: hello there"
    )
    await gateway.aclose()


async def test_a_chat_that_did_not_wait_has_no_notice() -> None:
    gateway = ModelGateway(FakeBackend(["m1"]), model="m1")
    await gateway.load("m1")
    items = [item async for item in gateway.chat(HELLO)]
    assert all(isinstance(item, ChatChunk) for item in items)
    await gateway.aclose()
