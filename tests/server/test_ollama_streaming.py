"""The Ollama API's streams: the interactive lease is held for the whole answer and freed when
the client leaves; the "Waiting for GPU..." notice reaches the official client (sync and async)
and raw NDJSON readers as an empty chunk they tolerate; later errors are a last error line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any

import ollama
import pytest

from gpuguard import GpuEvent, GpuGuard, ModelNotFound, Priority
from gpuguard.llm import ChatChunk, ChatMessage, ChatOptions
from gpuguard.testing import FakeBackend

from .conftest import MODEL, Live, LiveFactory, gpu_held, until

HELLO = [{"role": "user", "content": "hello there"}]
QUEUE_WAIT_S = 10


def _gpu_events(guard: GpuGuard) -> list[GpuEvent]:
    return [e for e in guard.events.history(kinds={"gpu"}) if isinstance(e, GpuEvent)]


async def _client_parts(live: Live, **request: Any) -> list[Any]:
    client = ollama.AsyncClient(host=live.url)
    return [part async for part in await client.chat(model=MODEL, stream=True, **request)]


async def _behind_holder(live: Live, request: Awaitable[Any], holder: str = "index-batch") -> Any:
    """Run ``request`` while ``holder`` holds the GPU; let go once the request is queued.

    The evidence of "queued" is the chat's ``waiting`` event, never elapsed time.
    """
    with live.guard.events.subscribe(kinds={"gpu"}) as events:
        async with gpu_held(live.guard, holder) as release:
            task = asyncio.ensure_future(request)
            async with asyncio.timeout(QUEUE_WAIT_S):
                while True:
                    event = await events.get()
                    if isinstance(event, GpuEvent) and event.status == "waiting":
                        break
            release.set()
            return await task


def _ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


class GatedBackend(FakeBackend):
    """Sends the first word, then waits for ``gate`` before the rest."""

    def __init__(self, models: Sequence[str]) -> None:
        super().__init__(models)
        self.gate = asyncio.Event()
        self.closed = asyncio.Event()

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """The fake's answer, paused after its first chunk."""
        try:
            async for index, chunk in _enumerate(super().chat(model, messages)):
                yield chunk
                if index == 0:
                    await self.gate.wait()
        finally:
            self.closed.set()


async def _enumerate(
    chunks: AsyncGenerator[ChatChunk, None],
) -> AsyncGenerator[tuple[int, ChatChunk], None]:
    index = 0
    async for chunk in chunks:
        yield index, chunk
        index += 1


@pytest.mark.parametrize("route", ["/api/chat", "/api/generate"])
async def test_the_interactive_lease_is_held_for_the_whole_stream(
    make_live: LiveFactory, route: str
) -> None:
    backend = GatedBackend([MODEL])
    async with make_live(backend=backend) as live:
        body = {"model": MODEL, "messages": HELLO, "prompt": "hello there"}
        async with live.http.stream("POST", route, json=body) as response:
            lines = response.aiter_lines()
            first = json.loads(await anext(lines))
            assert first["done"] is False
            holder = live.guard.current
            assert holder is not None
            assert holder.operation == "chat"
            assert holder.priority is Priority.INTERACTIVE
            backend.gate.set()
            rest = [json.loads(line) async for line in lines]
        assert rest[-1]["done"] is True
        await until(lambda: live.guard.current is None)
        events = [e for e in _gpu_events(live.guard) if e.lease_id == holder.lease_id]
        assert [e.status for e in events] == ["started", "completed"]


async def test_a_client_leaving_mid_stream_frees_the_gpu(make_live: LiveFactory) -> None:
    backend = GatedBackend([MODEL])
    async with make_live(backend=backend) as live:
        async with live.http.stream(
            "POST", "/api/chat", json={"model": MODEL, "messages": HELLO}
        ) as r:
            await anext(r.aiter_lines())
            assert live.guard.current is not None
        await backend.closed.wait()
        await until(lambda: live.guard.current is None)
        statuses = [e.status for e in _gpu_events(live.guard)]
        assert statuses[-1] in ("cancelled", "completed")


async def test_waiting_notice_is_an_empty_chunk_the_official_client_ignores(live: Live) -> None:
    parts = await _behind_holder(live, _client_parts(live, messages=HELLO))
    assert parts[0].message.content == ""
    assert parts[0].done is False
    assert "".join(p.message.content or "" for p in parts) == "echo: hello there"
    assert parts[-1].done is True


async def test_waiting_notice_on_the_wire(live: Live) -> None:
    request = live.http.post("/api/generate", json={"model": MODEL, "prompt": "hi"})
    response = await _behind_holder(live, request)
    first, *rest = _ndjson(response.text)
    assert first["response"] == ""
    assert first["done"] is False
    assert first["gpuguard"]["status"] == "waiting"
    assert first["gpuguard"]["message"] == "Waiting for GPU... (held by index-batch)"
    assert "".join(line["response"] for line in rest) == "echo: hi"


async def test_an_error_after_the_first_line_is_a_last_error_line(live: Live) -> None:
    async def fail_then_chat() -> list[Any]:
        # Set once the request has been admitted (the GPU is busy): the failure comes later.
        live.backend.fail_next = ModelNotFound("gone", backend="fake", model=MODEL)
        return await _client_parts(live, messages=HELLO)

    with pytest.raises(ollama.ResponseError, match="gone") as failed:
        await _behind_holder(live, fail_then_chat())
    assert failed.value.status_code == -1  # raised from a stream line, not an HTTP status


async def test_sync_client_tolerates_the_waiting_notice(live: Live) -> None:
    def run() -> list[Any]:
        return list(ollama.Client(host=live.url).chat(model=MODEL, messages=HELLO, stream=True))

    parts = await _behind_holder(live, asyncio.to_thread(run))
    assert parts[0].message.content == ""
    assert "".join(p.message.content or "" for p in parts) == "echo: hello there"
