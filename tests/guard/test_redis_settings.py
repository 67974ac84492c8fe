"""``[guard] scope = "redis"``: the product builds its guard over Redis, the URL kept secret."""

from __future__ import annotations

import pytest

from gpuguard import ConfigError
from gpuguard.server._runtime import build_gateway
from gpuguard.settings import load_settings

from .redis_support import REDIS_URL, require_redis


def test_redis_scope_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        load_settings(guard={"scope": "redis"})


async def test_redis_scope_builds_a_redis_guard_and_hides_the_url() -> None:
    require_redis()
    url = REDIS_URL.replace("redis://", "redis://:hunter2@")
    settings = load_settings(
        guard={"scope": "redis", "redis_url": url, "name": "settings-gpu"},
        embeddings={"gpu_engine": "none"},
    )
    assert "hunter2" not in repr(settings.guard)
    gateway = build_gateway(settings)
    try:
        assert gateway.guard.scope == "redis"
        assert "hunter2" not in repr(gateway.guard)
    finally:
        await gateway.guard.aclose()
        await gateway.aclose()
