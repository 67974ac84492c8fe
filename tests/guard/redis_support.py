"""The Redis the tests use: the real one on 127.0.0.1:6379, or a private one they can kill.

With ``CI=true`` a missing Redis fails the tests that need it; elsewhere they are skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from gpuguard import FakeClock, GpuGuard
from gpuguard.guard.policies import EXCLUSIVE, Policy
from gpuguard.guard.scopes.redis import RedisArbiter

REDIS_URL = "redis://127.0.0.1:6379/0"


def require_redis(url: str = REDIS_URL) -> None:
    """Fail (CI) or skip (elsewhere) unless Redis answers at ``url``."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {url} is needed: {exc}")
        pytest.skip(f"no Redis at {url}: {exc}")


def redis_arbiter(
    name: str,
    *,
    prefix: str,
    clock: FakeClock,
    aging_s: float | None,
    policy: Policy = EXCLUSIVE,
) -> RedisArbiter:
    """A Redis arbiter whose queue follows ``clock`` (the contract suite's fake time)."""
    require_redis()
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2.0)
    sync_client = redis.Redis.from_url(REDIS_URL, socket_timeout=2.0)
    return RedisArbiter(
        client,
        sync_client,
        name,
        aging_s=aging_s,
        prefix=prefix,
        clock=clock,
        queue_clock=clock,
        policy=policy,
    )


async def delete_keys(url: str, prefix: str) -> None:
    """Remove every key a test made under ``prefix``."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A ``redis-server`` of the test's own, on a free port, that the test may kill.

    With ``tls`` (CA, certificate, key files) it speaks TLS only, on that port.
    """

    def __init__(self, directory: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is needed")
            pytest.skip("no redis-server")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.tls = tls
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) the server, empty, and wait until it answers (bounded)."""
        listen = ["--port", str(self.port)]
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        if self.tls is not None:
            ca, cert, key = (str(path) for path in self.tls)
            listen = [
                *("--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert),
                *("--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"),
            ]
            client = redis.Redis(
                "127.0.0.1", self.port, socket_timeout=0.5, ssl=True, ssl_ca_certs=ca
            )
        self.process = subprocess.Popen(
            [
                self.binary,
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)  # a bounded readiness poll of a subprocess
        raise AssertionError("the private redis-server did not start")

    def kill(self) -> None:
        """SIGKILL the server: every connection drops, every key is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


@contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    """A private Redis, killed at the end however the test ends."""
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@asynccontextmanager
async def guard_pair(
    prefix: str, ttl_s: float
) -> AsyncIterator[tuple[GpuGuard, GpuGuard, RedisArbiter]]:
    """Two guards of one new lease with their own client ids (as two processes), and the
    second's arbiter; every key under ``prefix`` is deleted afterwards."""
    require_redis()
    name = f"pair-{uuid.uuid4().hex[:8]}"
    a = RedisArbiter.from_url(REDIS_URL, name, prefix=prefix, ttl_s=ttl_s)
    b = RedisArbiter.from_url(REDIS_URL, name, prefix=prefix, ttl_s=ttl_s)
    first, second = GpuGuard(arbiter=a), GpuGuard(arbiter=b)
    try:
        yield first, second, b
    finally:
        await first.aclose()
        await second.aclose()
        await delete_keys(REDIS_URL, prefix)
