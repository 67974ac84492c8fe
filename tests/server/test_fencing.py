"""``gpuguard serve`` behind another gpuguard: X-GPU-Fence older than the newest seen is a 409."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from gpuguard import GpuGuard
from gpuguard.gateway import ModelGateway
from gpuguard.llm import ChatChunk, ChatMessage
from gpuguard.llm.ollama import OllamaBackend

from ..guard.redis_support import REDIS_URL, delete_keys, require_redis
from .conftest import MODEL, Live, LiveFactory

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
TTL_S = 10.0


@pytest.fixture
async def fronts() -> AsyncIterator[tuple[GpuGuard, GpuGuard, str]]:
    """Two gpuguard processes' guards in front of the server, on one Redis lease ``gpu0``."""
    require_redis()
    prefix = f"gpuguard-test-{uuid.uuid4().hex[:10]}"
    first = GpuGuard.redis(REDIS_URL, "gpu0", prefix=prefix, ttl_s=TTL_S)
    second = GpuGuard.redis(REDIS_URL, "gpu0", prefix=prefix, ttl_s=TTL_S)
    try:
        yield first, second, prefix
    finally:
        await first.aclose()
        await second.aclose()
        await delete_keys(REDIS_URL, prefix)


def fence(token: int | None) -> dict[str, str]:
    assert token is not None
    return {"X-GPU-Fence": f"gpu0:{token}"}


async def test_a_stale_fence_gets_409_and_the_server_keeps_serving(
    live: Live, fronts: tuple[GpuGuard, GpuGuard, str]
) -> None:
    first, second, _ = fronts
    old = await first.acquire("chat")
    response = await live.http.post("/v1/chat/completions", json=CHAT, headers=fence(old.fence))
    assert response.status_code == 200
    old.release()  # as if its grant had lapsed: the first holder was stopped past its TTL
    new = await second.acquire("chat")
    assert new.fence is not None
    assert old.fence is not None
    assert new.fence > old.fence
    response = await live.http.post("/v1/chat/completions", json=CHAT, headers=fence(new.fence))
    assert response.status_code == 200
    chats = len(live.backend.chats)

    # The first holder resumes and sends more work under its old grant.
    response = await live.http.post("/v1/chat/completions", json=CHAT, headers=fence(old.fence))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "gpu_fence_stale"
    assert f"fencing token {new.fence}, newer than {old.fence}" in error["message"]
    ollama = await live.http.post(
        "/api/chat", json={**CHAT, "stream": False}, headers=fence(old.fence)
    )
    assert ollama.status_code == 409
    assert "taken over" in ollama.json()["error"]
    assert len(live.backend.chats) == chats, "work under a stale fence reached the backend"

    # Equal fences, and requests without one, are served as before.
    response = await live.http.post("/v1/chat/completions", json=CHAT, headers=fence(new.fence))
    assert response.status_code == 200
    assert (await live.http.post("/v1/chat/completions", json=CHAT)).status_code == 200
    new.release()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("gpu0", "must be one '<gpu>:<token>'"),
        ("gpu0:-1", "must be one '<gpu>:<token>'"),
        ("gpu0:12345678901234567890", "must be one '<gpu>:<token>'"),
        ("gpu 0:5", "must be one '<gpu>:<token>'"),
        ("gpu0:5:6", "the floor no larger than the token"),
        ("gpu1:5", "names GPU 'gpu1'; this server fences GPU 'gpu0'"),
    ],
)
async def test_a_malformed_or_foreign_fence_is_a_400(live: Live, value: str, why: str) -> None:
    response = await live.http.post(
        "/v1/chat/completions", json=CHAT, headers={"X-GPU-Fence": value}
    )
    assert response.status_code == 400
    assert why in response.json()["error"]["message"]
    assert live.backend.chats == []
    assert live.guard.fences.newest is None, "a refused header was recorded"


async def test_fronts_sharing_the_gpu_name_a_floor_and_older_grants_beside_it_pass(
    live: Live,
) -> None:
    """Budget fronts: grants 10 and 12 hold side by side (floor 10); grant 20 came after 10
    lapsed (floor 12): from then on 10 is refused, 12 still passes."""
    for value, status in [
        ("gpu0:12:10", 200),
        ("gpu0:10", 200),
        ("gpu0:20:12", 200),
        ("gpu0:12:10", 200),
        ("gpu0:10", 409),
    ]:
        response = await live.http.post(
            "/v1/chat/completions", json=CHAT, headers={"X-GPU-Fence": value}
        )
        assert (value, response.status_code) == (value, status)


async def test_two_fence_headers_are_a_400(live: Live) -> None:
    headers = [("X-GPU-Fence", "gpu0:5"), ("X-GPU-Fence", "gpu0:6")]
    response = await live.http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 400
    assert live.guard.fences.newest is None


async def test_a_fence_is_admitted_only_from_a_caller_with_the_token(
    make_live: LiveFactory,
) -> None:
    async with make_live(token="s3cret") as live:
        async with httpx.AsyncClient(base_url=live.url) as anonymous:
            response = await anonymous.post(
                "/v1/chat/completions", json=CHAT, headers={"X-GPU-Fence": "gpu0:999999"}
            )
        assert response.status_code == 401
        assert live.guard.fences.newest is None, "an unauthenticated fence was recorded"
        response = await live.http.post(
            "/v1/chat/completions", json=CHAT, headers={"X-GPU-Fence": "gpu0:999999"}
        )
        assert response.status_code == 200
        assert live.guard.fences.newest == 999999


async def test_a_gpuguard_in_front_sends_its_lease_fence_with_its_work(
    live: Live, fronts: tuple[GpuGuard, GpuGuard, str]
) -> None:
    front_guard, _, _ = fronts
    # The server behind trusts its fronts with its token: a fence from anyone else is a 401.
    backend = OllamaBackend(live.url, api_key=live.app.state.access.token)
    front = ModelGateway(backend, model=MODEL, guard=front_guard)
    try:
        words = [
            item.content
            async for item in front.chat([ChatMessage("user", "through two")], model=MODEL)
            if isinstance(item, ChatChunk)
        ]
    finally:
        await front.aclose()
    assert "".join(words) == "echo: through two"
    sent = live.guard.fences.newest
    assert sent is not None, "the front's work reached the server without its fence"
    stale = await live.http.post("/v1/chat/completions", json=CHAT, headers=fence(sent - 1))
    assert stale.status_code == 409
