"""The Redis hand-off's path: a signed grant message, and heartbeat threads left asleep.

A grant made alone is taken from the message the lease script signed for the granted process
(no second round trip to read the state); a message signed with anything but that process's
secret is only a hint to look. The heartbeat's threads are woken only when one of them must
look before the time it already waits for. Each test uses its own prefix and lease name.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from gpuguard import GpuGuard
from gpuguard.guard.scopes.redis import RedisArbiter
from gpuguard.guard.scopes.redis._heartbeat import Heartbeat
from gpuguard.guard.scopes.redis._mirror import heard_grant
from gpuguard.guard.scopes.redis._view import Mine

from .redis_support import REDIS_URL, guard_pair

PREFIX = "gpuguard-test-handoff"
TTL_S = 60.0  # no beat falls inside a test's hand-off


@pytest.fixture
async def pair() -> AsyncIterator[tuple[GpuGuard, GpuGuard, RedisArbiter]]:
    """Two guards of one lease with their own client ids (as two processes); the second's
    arbiter."""
    async with guard_pair(PREFIX, TTL_S) as guards:
        yield guards


def _spy_ops(arbiter: RedisArbiter) -> list[str]:
    """The ops ``arbiter`` sends on its asynchronous connection, from now on."""
    ops: list[str] = []
    link = arbiter._link  # the test looks at what goes to Redis
    call = link.call

    async def spied(op: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        ops.append(op)
        return await call(op, *args, **kwargs)

    link.call = spied  # type: ignore[method-assign]
    return ops


async def _queued(guard: GpuGuard, arbiter: RedisArbiter) -> None:
    """Wait (bounded) until Redis has ``guard``'s request in line."""
    async with asyncio.timeout(20):
        while not guard.snapshot().waiters:
            await asyncio.sleep(0)
            await arbiter.settle()
        await arbiter.settle()


async def test_a_waiter_takes_a_grant_made_alone_from_its_message_without_reading_the_state(
    pair: tuple[GpuGuard, GpuGuard, RedisArbiter],
) -> None:
    first, second, b = pair
    lease = await first.acquire("load")
    waiting = asyncio.create_task(second.acquire("chat", wait_timeout=30.0))
    await _queued(second, b)
    ops = _spy_ops(b)
    lease.release()
    granted = await waiting
    assert ops == [], "the grant message should have been enough"
    assert granted.fence is not None
    assert lease.fence is not None
    assert granted.fence > lease.fence
    assert granted.fence_floor == granted.fence  # granted alone
    # The view no longer shows the holder that handed it on.
    assert second.current is not None
    assert second.current.operation == "chat"
    assert [h.operation for h in second.snapshot().holders] == ["chat"]
    granted.release()


async def test_a_grant_message_signed_with_another_key_is_only_a_hint(
    pair: tuple[GpuGuard, GpuGuard, RedisArbiter],
) -> None:
    first, second, b = pair
    lease = await first.acquire("load")
    assert lease.fence is not None
    waiting = asyncio.create_task(second.acquire("chat", wait_timeout=30.0))
    await _queued(second, b)
    tid = next(iter(b._view.mine))  # its ticket id is in Redis for any client to read
    fence = lease.fence + 1
    attacker = redis.Redis.from_url(REDIS_URL)
    body = f"{tid} {fence} {fence} 99999999999999 99999999999999999"
    for mac in ("0" * 40, _sign("not-its-secret", body)):
        attacker.publish(b._link.own_channel, f"grant {body} {mac}")
    attacker.publish(b._link.own_channel, b"grant \xff\xfe")  # not even UTF-8
    attacker.close()
    async with asyncio.timeout(20):
        await b.settle()  # every message published before was handled
    assert not waiting.done(), "a forged grant message started a waiter beside the holder"
    assert b._listener.running, "a forged message stopped the listener"
    lease.release()
    granted = await asyncio.wait_for(waiting, 10.0)  # the real hand-off still arrives
    assert granted.fence is not None
    assert granted.fence > lease.fence
    granted.release()


async def test_the_lease_script_signs_a_grant_with_the_granted_process_secret_only(
    pair: tuple[GpuGuard, GpuGuard, RedisArbiter],
) -> None:
    first, second, b = pair
    lease = await first.acquire("load")
    waiting = asyncio.create_task(second.acquire("chat", wait_timeout=30.0))
    await _queued(second, b)
    listener = redis.Redis.from_url(REDIS_URL).pubsub()
    listener.subscribe(b._link.own_channel)
    assert listener.get_message(timeout=10.0) is not None  # subscribed
    lease.release()
    granted = await waiting
    message = listener.get_message(timeout=10.0)
    listener.close()
    assert message is not None
    kind, _, note = message["data"].decode().partition(" ")
    assert kind == "grant"
    heard = heard_grant(note, b._secret)
    assert heard is not None
    assert int(heard.fence) == granted.fence
    assert heard.floor == granted.fence
    a = first._arbiter
    assert isinstance(a, RedisArbiter)
    assert heard_grant(note, a._secret) is None
    tid, fence, *rest = note.split(" ")
    assert heard_grant(" ".join([tid, str(int(fence) + 1), *rest]), b._secret) is None
    # No answer shows a process's secret to another.
    state = await a._call("state", "", "", "")
    assert b._secret not in repr(state)
    granted.release()


def _sign(secret: str, body: str) -> str:
    import hashlib

    inner = hashlib.sha1((secret + body).encode()).hexdigest()
    return hashlib.sha1((secret + inner).encode()).hexdigest()


# --- the heartbeat's threads ------------------------------------------------------------


class CountingCondition(threading.Condition):
    """A condition that counts its notifications and tells when a thread waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.notified = 0
        self.waiting = threading.Semaphore(0)

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.release()
        return super().wait(timeout)


async def test_answers_that_bring_no_deadline_closer_leave_the_heartbeat_threads_asleep() -> None:
    loop = asyncio.get_running_loop()
    expired: asyncio.Future[str] = loop.create_future()
    mine = Mine.__new__(Mine)  # a waiting ticket, as the threads see one
    mine.fence = None

    def tickets() -> dict[str, Mine]:
        return {"c:1": mine}

    def beat(held: object) -> dict[str, Any]:
        return {"r": "ok", "x": False, "h": [], "sent": loop.time()}

    heartbeat = Heartbeat(tickets, beat, ttl_s=TTL_S, every_s=TTL_S / 5, margin_s=TTL_S / 4)
    cond = heartbeat._cond = CountingCondition()
    far = loop.time() + 10 * TTL_S
    heartbeat.confirm(far)
    heartbeat.start(lambda *_: None, lambda reason: expired.set_result(reason))
    try:
        for _ in range(2):  # both threads wait
            assert await asyncio.to_thread(cond.waiting.acquire, True, 10.0)
        before = cond.notified
        no_holder = {"h": [], "sent": loop.time()}
        for step in range(100):  # answers, each confirming a later deadline
            heartbeat.confirm(far + step)
            heartbeat.saw(no_holder, lambda tid: False)
            heartbeat.poke()
        assert cond.notified == before
        heartbeat.confirm(loop.time())  # a nearer deadline: the fence must look now
        assert cond.notified == before + 1
        assert "fenced" in await asyncio.wait_for(expired, 10.0)
    finally:
        await heartbeat.stop()
