"""Clients of the same Redis: forged messages, ACL users, TLS.

A client that may ``PUBLISH`` on a lease's channel forges ``grant`` messages: one naming
a made-up ticket with a huge fence (which used to stop the holder), one naming a real
waiter (which used to start it beside the holder). A message is only a hint to look; the
state in Redis decides. An ACL user limited to the lease's keys and channel runs the lease,
a wrong password is a clear error without the password in it, and ``rediss://`` works
against a TLS-only Redis of the test's own.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import redis

from gpuguard import GpuGuard, GuardUnavailable
from gpuguard.guard.scopes.redis import RedisArbiter

from ..guard.redis_support import REDIS_URL, PrivateRedis, private_redis, require_redis

PREFIX = "gpuguard-test-forge"


def _arbiter(guard: GpuGuard) -> RedisArbiter:
    arbiter = guard._arbiter  # the test looks at what Redis decided
    assert isinstance(arbiter, RedisArbiter)
    return arbiter


async def _forge(name: str, message: str, *guards: GpuGuard) -> None:
    """Publish ``message`` on the lease's channels, as any client of that Redis can.

    The lease's own channel, and each guard's, where its grants arrive (its client id is the
    first part of its ticket ids, which any client can read).
    """
    attacker = redis.Redis.from_url(REDIS_URL)
    channel = f"{PREFIX}:{{{name}}}:events"
    attacker.publish(channel, message)
    for guard in guards:
        attacker.publish(f"{channel}:{_arbiter(guard)._client_id}", message)
    attacker.close()
    async with asyncio.timeout(20):
        for guard in guards:
            await _arbiter(guard).settle()  # every message published before was handled


async def _queued(guard: GpuGuard) -> None:
    """Wait (bounded) until Redis has ``guard``'s request in line."""
    async with asyncio.timeout(20):
        for _ in range(10_000):
            if guard.snapshot().waiters:
                break
            await asyncio.sleep(0)  # let the request go out, then wait for Redis's answer
            await _arbiter(guard).settle()
        await _arbiter(guard).settle()


async def test_a_forged_grant_with_a_huge_fence_does_not_stop_the_holder() -> None:
    require_redis()
    name = f"forge-{uuid.uuid4().hex[:8]}"
    guard = GpuGuard.redis(REDIS_URL, name, prefix=PREFIX)
    try:
        started = asyncio.Event()

        async def gpu_work() -> str:
            started.set()
            await asyncio.Event().wait()
            return "never"

        async with guard.hold("chat") as lease:
            work = asyncio.create_task(lease.run(gpu_work()))
            await started.wait()
            await _forge(name, "grant forged:1 99999999999999", guard)
            await _forge(name, "changed", guard)
            assert lease.held
            assert not work.done()
            assert guard.current is not None
            assert guard.current.operation == "chat"
            work.cancel()
            with pytest.raises(asyncio.CancelledError):
                await work
    finally:
        await guard.aclose()


async def test_a_forged_grant_to_a_waiter_does_not_start_it_beside_the_holder() -> None:
    require_redis()
    name = f"forge-{uuid.uuid4().hex[:8]}"
    holder = GpuGuard.redis(REDIS_URL, name, prefix=PREFIX)
    other = GpuGuard.redis(REDIS_URL, name, prefix=PREFIX)
    try:
        lease = await holder.acquire("chat")
        assert lease.fence is not None
        waiting = asyncio.create_task(other.acquire("embed", wait_timeout=30.0))
        await _queued(other)
        # The waiter's ticket id is in Redis for any client to read.
        ids = redis.Redis.from_url(REDIS_URL).zrange(f"{PREFIX}:{{{name}}}:q:1", 0, -1)
        assert len(ids) == 1
        await _forge(name, f"grant {ids[0].decode()} {lease.fence + 1}", other, holder)
        assert not waiting.done(), "a forged message started a waiter beside the holder"
        assert lease.held
        lease.release()
        granted = await asyncio.wait_for(waiting, 10.0)  # the real hand-off still arrives
        assert granted.fence is not None
        assert granted.fence > lease.fence
        granted.release()
    finally:
        await holder.aclose()
        await other.aclose()


# --- ACL users and TLS, on a Redis of the test's own --------------------------------------


def _acl_user(server: PrivateRedis, user: str, password: str, prefix: str) -> None:
    """An ACL user that may touch only ``prefix``'s keys and channels, and run scripts."""
    admin = redis.Redis(port=server.port)
    admin.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{prefix}:*",
        f"&{prefix}:*", "+@scripting", "+@pubsub", "+ping", "+hello",
        "+@keyspace", "+@read", "+@write", "-@dangerous", "+time",
    )  # fmt: skip
    admin.close()


async def test_an_acl_user_limited_to_the_lease_keys_runs_the_lease(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        _acl_user(server, "gpu", "s3cret-Pw", "gpuguard")
        url = f"redis://gpu:s3cret-Pw@127.0.0.1:{server.port}/0"
        first, second = GpuGuard.redis(url, "gpu0"), GpuGuard.redis(url, "gpu0")
        try:
            lease = await first.acquire("chat")
            waiting = asyncio.create_task(second.acquire("embed", wait_timeout=10.0))
            await _queued(second)
            lease.release()
            granted = await asyncio.wait_for(waiting, 10.0)
            assert granted.fence is not None
            assert lease.fence is not None
            assert granted.fence > lease.fence
            granted.release()
        finally:
            await first.aclose()
            await second.aclose()


async def test_a_wrong_password_or_a_foreign_prefix_is_a_clear_error(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        _acl_user(server, "gpu", "s3cret-Pw", "gpuguard")
        wrong = GpuGuard.redis(f"redis://gpu:Wr0ng-Pw@127.0.0.1:{server.port}/0", "gpu0")
        foreign = GpuGuard.redis(
            f"redis://gpu:s3cret-Pw@127.0.0.1:{server.port}/0", "gpu0", prefix="other"
        )
        try:
            with pytest.raises(GuardUnavailable) as denied:
                await wrong.acquire("chat", wait_timeout=2.0)
            assert "Wr0ng-Pw" not in str(denied.value)
            with pytest.raises(GuardUnavailable, match=r"(?i)permission|noperm"):
                await foreign.acquire("chat", wait_timeout=2.0)
        finally:
            await wrong.aclose()
            await foreign.aclose()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test's certificates")
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt")
    )

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "1", "-subj", "/CN=gpuguard test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")  # fmt: skip
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


async def test_rediss_urls_reach_a_tls_only_redis(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    server = PrivateRedis(tmp_path, tls=(ca, cert, key))
    server.start()
    try:
        url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={ca}"
        guard = GpuGuard.redis(url, "gpu0")
        try:
            lease = await guard.acquire("chat")
            assert lease.fence is not None
            lease.release()
        finally:
            await guard.aclose()
        plain = GpuGuard.redis(f"redis://127.0.0.1:{server.port}/0", "gpu0")
        try:
            with pytest.raises(GuardUnavailable):
                await plain.acquire("chat", wait_timeout=2.0)
        finally:
            await plain.aclose()
    finally:
        server.kill()
