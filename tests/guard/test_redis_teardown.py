"""A dead holder's GPU context outlives its Redis grant: a waiter of its host waits for it.

Real processes for the holder and its death (SIGKILL), the real Redis; the driver's list of
processes on the GPU is a :class:`Driver` the test sets, and the waiter's time a FakeClock
(the driver is asked again on it, and the bound is counted on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from gpuguard import FakeClock, GpuGuard, GuardUnavailable, Lease, WouldBlock
from gpuguard.devices import DevicesUnavailable
from gpuguard.guard import Hold
from gpuguard.guard.scopes import make_arbiter
from gpuguard.guard.scopes._teardown import POLL_S, TEARDOWN_S
from gpuguard.guard.scopes.redis import RedisArbiter
from gpuguard.guard.scopes.redis._mirror import heard_grant

from .redis_support import REDIS_URL, require_redis
from .test_redis_processes import PREFIX, worker

POLL_LIMIT_S = 30.0
"""Bound on waiting for a real process or a real TTL (they have no event to wait on)."""


class Driver:
    """The GPU driver's list of processes, as the test sets it; ``asked`` once it was read."""

    def __init__(self) -> None:
        self.listed: set[int] = set()
        self.asked = asyncio.Event()
        self.failing = False

    def __call__(self) -> Collection[int]:
        self.asked.set()
        if self.failing:
            raise DevicesUnavailable("the driver stopped answering")
        return set(self.listed)


def waiting_guard(name: str, driver: Driver, clock: FakeClock, ttl_s: float = 1.0) -> GpuGuard:
    """A Redis-scope guard of this host whose driver is ``driver`` (as the settings build it)."""
    require_redis()
    arbiter = make_arbiter(
        "redis",
        name,
        redis_url=REDIS_URL,
        prefix=PREFIX,
        ttl_s=ttl_s,
        aging_s=30.0,
        clock=clock,
        gpu_pids=driver,
    )
    return GpuGuard(name, clock=clock, arbiter=arbiter, wait_timeout=None)


def holds(ledger: Path) -> bool:
    """Whether the holder has written that it holds."""
    return ledger.exists() and ledger.read_text().startswith("held")


async def holding(name: str, ledger: Path, *host: str) -> subprocess.Popen[bytes]:
    """A process that holds lease ``name`` (as a process of ``host``, if given)."""
    holder = worker(REDIS_URL, name, str(ledger), "hold", *host)
    for _ in range(int(POLL_LIMIT_S / 0.05)):  # bounded readiness poll of the subprocess
        if holds(ledger):
            return holder
        await asyncio.sleep(0.05)
    holder.kill()
    pytest.fail("the holder did not take the lease")


async def held_once(request: Hold) -> Lease:
    """Wait for ``request``'s grant, then end the hold at once."""
    async with request as lease:
        return lease


@dataclass
class Scene:
    """A waiter queued behind a holder of lease ``name`` that was then SIGKILLed."""

    name: str
    guard: GpuGuard
    pid: int
    granted: asyncio.Task[Lease]
    """The waiter's hold: done once it was granted (and ended at once)."""


@contextlib.asynccontextmanager
async def killed_behind(
    tmp_path: Path, driver: Driver, clock: FakeClock, *host: str, ttl_s: float = 1.0
) -> AsyncIterator[Scene]:
    """A waiter, and its holder killed while ``driver`` lists it (as of ``host``, if given)."""
    name = f"teardown-{uuid.uuid4().hex[:8]}"
    guard = waiting_guard(name, driver, clock, ttl_s)
    holder = await holding(name, tmp_path / "ledger", *host)
    try:
        request = guard.hold("next")
        assert await request.reserve()  # queued behind the holder
        driver.listed.add(holder.pid)
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        granted = asyncio.create_task(held_once(request))
        try:
            yield Scene(name, guard, holder.pid, granted)
        finally:
            if granted.cancel():  # still waiting (a test that awaited it saw its end)
                with contextlib.suppress(asyncio.CancelledError):
                    await granted
    finally:
        holder.kill()
        holder.wait(5)
        await guard.aclose()


async def asked_or_granted(driver: Driver, granted: asyncio.Task[Lease]) -> None:
    """Wait until the driver was asked or the waiter granted, whichever comes first."""
    asked = asyncio.create_task(driver.asked.wait())
    await asyncio.wait({asked, granted}, timeout=POLL_LIMIT_S, return_when="FIRST_COMPLETED")
    asked.cancel()
    assert driver.asked.is_set() or granted.done(), "the waiter was neither held back nor granted"


async def test_the_next_holder_waits_until_the_dead_holder_has_left_the_gpu(
    tmp_path: Path,
) -> None:
    driver, clock = Driver(), FakeClock()
    async with killed_behind(tmp_path, driver, clock) as scene:
        await asked_or_granted(driver, scene.granted)  # its grant lapsed (the TTL, 1 s)
        assert not scene.granted.done(), "granted while the dead holder is still on the GPU"
        assert scene.guard.queue_length == 0  # it holds the grant in Redis meanwhile
        driver.asked.clear()
        clock.advance(POLL_S)
        assert driver.asked.is_set()  # asked again: still listed
        for _ in range(3):
            await asyncio.sleep(0)  # checkpoints: a grant reported now would have run
        assert not scene.granted.done()
        driver.listed.clear()  # the driver has torn it down
        clock.advance(POLL_S)
        async with asyncio.timeout(POLL_LIMIT_S):
            lease = await scene.granted
        assert lease.fence is not None


async def test_a_grant_made_while_a_dead_holder_may_be_on_the_gpu_is_published_as_a_hint(
    tmp_path: Path,
) -> None:
    """A third process's call finds the lapsed grant and grants the waiter: the message it
    publishes is only a hint, never a signed grant the waiter could take as it is (that would
    skip the state, which names the dead holder), and the waiter waits for the driver."""
    driver, clock = Driver(), FakeClock()
    async with killed_behind(tmp_path, driver, clock, ttl_s=60.0) as scene:  # no beat of its own
        arbiter = scene.guard._arbiter  # the test reads the waiter's channel and secret
        assert isinstance(arbiter, RedisArbiter)
        listener = redis.Redis.from_url(REDIS_URL).pubsub()
        listener.subscribe(arbiter._link.own_channel)
        assert listener.get_message(timeout=10.0) is not None  # subscribed
        other = GpuGuard(
            arbiter=make_arbiter(
                "redis",
                scene.name,
                redis_url=REDIS_URL,
                prefix=PREFIX,
                ttl_s=60.0,
                aging_s=30.0,
                clock=FakeClock(),
            )
        )
        try:
            message = None
            for _ in range(int(POLL_LIMIT_S / 0.05)):  # bounded: until the holder's TTL lapses
                with pytest.raises(WouldBlock):
                    other.acquire_nowait("probe")  # each call runs the script: it reaps, grants
                message = listener.get_message(timeout=0.05)
                if message is not None:
                    break
            assert message is not None, "the waiter was never granted"
            kind, _, note = message["data"].decode().partition(" ")
            assert kind == "grant"
            assert heard_grant(note, arbiter._secret) is None  # a hint: read the state
            await asked_or_granted(driver, scene.granted)
            assert not scene.granted.done(), "granted while the dead holder is still on the GPU"
            driver.listed.clear()
            clock.advance(POLL_S)
            async with asyncio.timeout(POLL_LIMIT_S):
                await scene.granted
        finally:
            listener.close()
            await other.aclose()


async def test_the_wait_for_a_dead_holder_is_bounded_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver, clock = Driver(), FakeClock()
    caplog.set_level(logging.WARNING, logger="gpuguard.guard")
    async with killed_behind(tmp_path, driver, clock) as scene:
        await asked_or_granted(driver, scene.granted)
        assert not scene.granted.done()
        clock.advance(TEARDOWN_S)  # listed still, but past the bound
        async with asyncio.timeout(POLL_LIMIT_S):
            await scene.granted
    assert f"dead holder pid {scene.pid} is still listed on the GPU" in caplog.text


async def test_a_dead_holder_of_another_host_is_not_waited_for(tmp_path: Path) -> None:
    driver, clock = Driver(), FakeClock()
    async with killed_behind(tmp_path, driver, clock, "elsewhere") as scene:
        async with asyncio.timeout(POLL_LIMIT_S):
            await scene.granted  # its pid means nothing to this host's driver
        assert not driver.asked.is_set()


async def test_a_driver_that_stops_answering_does_not_hold_the_gpu_back(tmp_path: Path) -> None:
    driver, clock = Driver(), FakeClock()
    driver.failing = True
    async with killed_behind(tmp_path, driver, clock) as scene:
        async with asyncio.timeout(POLL_LIMIT_S):
            await scene.granted
        assert driver.asked.is_set()


async def test_a_waiter_that_gives_up_while_held_back_hands_the_gpu_on(tmp_path: Path) -> None:
    driver, clock = Driver(), FakeClock()
    async with killed_behind(tmp_path, driver, clock) as scene:
        await asked_or_granted(driver, scene.granted)
        scene.granted.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scene.granted
        assert scene.guard.snapshot().holder is None
        remembered = redis.Redis.from_url(REDIS_URL).hkeys(f"{PREFIX}:{{{scene.name}}}:holders")
        assert remembered == [b"teardown"]  # its grant is given back; the dead holder stays
        with pytest.raises(WouldBlock):  # and a request that would not wait is refused
            scene.guard.acquire_nowait("try")
        with pytest.raises(WouldBlock):
            async with scene.guard.try_hold("try"):
                pytest.fail("granted while the dead holder is still on the GPU")
        driver.listed.clear()
        scene.guard.acquire_nowait("try").release()


async def test_a_grant_lost_while_held_back_fails_the_request(tmp_path: Path) -> None:
    driver, clock = Driver(), FakeClock()
    async with killed_behind(tmp_path, driver, clock) as scene:
        await asked_or_granted(driver, scene.granted)
        client = redis.Redis.from_url(REDIS_URL)
        key = f"{PREFIX}:{{{scene.name}}}:holders"
        taken = [field for field in client.hkeys(key) if field != b"teardown"]
        assert client.hdel(key, *taken) == 1  # its grant is gone from Redis
        with pytest.raises(GuardUnavailable, match="its grant was gone"):
            async with asyncio.timeout(POLL_LIMIT_S):  # its next heartbeat finds it gone
                await scene.granted
