"""A chat closed while it says "Waiting for GPU..." leaves the line: no ghost lease."""

from __future__ import annotations

import asyncio

from gpuguard import GpuEvent, GpuStatus
from gpuguard.gateway import GpuWaiting, ModelGateway
from gpuguard.llm import ChatMessage
from gpuguard.testing import FakeBackend

HELLO = [ChatMessage("user", "hello there")]


async def test_a_chat_closed_while_waiting_gives_its_place_up() -> None:
    gateway = ModelGateway(FakeBackend(["m1"]), model="m1")
    await gateway.load("m1")
    holder = await gateway.guard.acquire("unload", model="m1")
    stream = gateway.chat(HELLO)
    assert isinstance(await anext(stream), GpuWaiting)
    assert gateway.guard.queue_length == 1
    await stream.aclose()  # the client went away while waiting
    assert gateway.guard.queue_length == 0
    holder.release()
    for _ in range(10):
        await asyncio.sleep(0)
    assert gateway.guard.current is None, "the closed chat was granted the GPU"
    chat_events = [
        e.status
        for e in gateway.guard.events.history()
        if isinstance(e, GpuEvent) and e.operation == "chat"
    ]
    assert chat_events == [GpuStatus.WAITING, GpuStatus.CANCELLED]
