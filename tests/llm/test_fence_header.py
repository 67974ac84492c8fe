"""GPU work under a fenced lease carries its token to the LLM server (``X-GPU-Fence``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from gpuguard import GpuGuard
from gpuguard.llm import Timeouts
from gpuguard.llm._http import HttpClient

from ..guard.redis_support import REDIS_URL, delete_keys, require_redis


@pytest.fixture
async def guard() -> AsyncIterator[GpuGuard]:
    require_redis()
    prefix = f"gpuguard-test-{uuid.uuid4().hex[:10]}"
    guard = GpuGuard.redis(REDIS_URL, "gpu0", prefix=prefix, ttl_s=10.0)
    try:
        yield guard
    finally:
        await guard.aclose()
        await delete_keys(REDIS_URL, prefix)


async def test_requests_of_fenced_work_carry_the_lease_token_and_others_none(
    guard: GpuGuard,
) -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-GPU-Fence"))
        return httpx.Response(200, text='{"ok": true}\n')

    client = HttpClient(
        "http://127.0.0.1:9",
        backend="test",
        timeouts=Timeouts(),
        transport=httpx.MockTransport(answer),
    )
    try:
        async with guard.hold("chat") as lease:
            assert lease.fence is not None
            await lease.run(client.json("GET", "/x", operation="load", timeout=5.0))
            lines = client.stream_lines("/chat", operation="chat", model=None, json_body={})
            assert [line async for line in lease.stream(lines)] == ['{"ok": true}']
        await client.json("GET", "/x", operation="health", timeout=5.0)  # under no lease
    finally:
        await client.aclose()
    assert seen == [f"gpu0:{lease.fence}", f"gpu0:{lease.fence}", None]


async def test_a_local_lease_sends_no_fence() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-GPU-Fence"))
        return httpx.Response(200, json={})

    client = HttpClient(
        "http://127.0.0.1:9",
        backend="test",
        timeouts=Timeouts(),
        transport=httpx.MockTransport(answer),
    )
    try:
        async with GpuGuard().hold("chat") as lease:
            await lease.run(client.json("GET", "/x", operation="load", timeout=5.0))
    finally:
        await client.aclose()
    assert seen == [None]
