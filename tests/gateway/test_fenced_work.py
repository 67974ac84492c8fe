"""The gateway is a last hop before the GPU: its work under a lease taken over is refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gpuguard import GpuGuard, StaleFence
from gpuguard.gateway import ModelGateway
from gpuguard.llm import ChatChunk, ChatMessage
from gpuguard.testing import FakeBackend

from ..guard.redis_support import REDIS_URL, delete_keys, require_redis

TTL_S = 10.0


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_redis()
    prefix = f"gpuguard-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    await delete_keys(REDIS_URL, prefix)


async def test_a_chat_whose_lease_was_taken_over_stops_at_its_next_chunk(prefix: str) -> None:
    backend = FakeBackend(["m"])
    gateway = ModelGateway(
        backend, model="m", guard=GpuGuard.redis(REDIS_URL, "gpu0", prefix=prefix, ttl_s=TTL_S)
    )
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        chat = gateway.chat([ChatMessage("user", "one two three four")], model="m")
        first = await anext(chat)
        assert isinstance(first, ChatChunk)
        token = await redis.get(f"{prefix}:{{gpu0}}:fence")  # the chat's grant, from Redis
        assert token is not None
        held = int(token)
        # Redis granted the GPU to another process (this holder was stopped past its TTL),
        # and that holder's work reached this GPU first: its X-GPU-Fence was admitted.
        gateway.guard.fences.admit(held + 1, operation="POST /v1/chat/completions")
        with pytest.raises(StaleFence) as refused:
            await anext(chat)
        assert (refused.value.fence, refused.value.newest) == (held, held + 1)
        assert backend.loaded == {"m"}
    finally:
        await redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
        await gateway.aclose()


async def test_a_chat_under_the_newest_fence_is_served(prefix: str) -> None:
    gateway = ModelGateway(
        FakeBackend(["m"]),
        model="m",
        guard=GpuGuard.redis(REDIS_URL, "gpu0", prefix=prefix, ttl_s=TTL_S),
    )
    try:
        words = [
            item.content
            async for item in gateway.chat([ChatMessage("user", "a b")], model="m")
            if isinstance(item, ChatChunk)
        ]
        assert "".join(words) == "echo: a b"
        newest = gateway.guard.fences.newest
        assert newest is not None, "the chat's own fence was not recorded"
        again = [item async for item in gateway.chat([ChatMessage("user", "c")], model="m")]
        assert again
        assert gateway.guard.fences.newest is not None
        assert gateway.guard.fences.newest > newest
    finally:
        await gateway.aclose()
