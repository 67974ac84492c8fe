"""One process of the multi-process Redis tests: random holds, logged to a shared ledger.

``python -m tests.guard._redis_worker URL NAME LEDGER SEED OPS`` runs ``OPS`` operations with
random priorities, hold times, wait timeouts and cancellations against the lease ``NAME``,
and appends ``start``/``end`` lines (fence, system-wide monotonic time) to ``LEDGER``.
``... URL NAME LEDGER hold [HOST]`` takes the lease (as a process of host ``HOST``, if
given), writes ``held`` and waits to be killed;
``... URL NAME LEDGER wait`` queues for it, writes ``queued`` and waits to be killed.
``... URL NAME LEDGER brief`` queues for it (lease TTL 60 s), writes ``queued``, and once
granted releases it and exits at once, without closing the guard: a short script's life.
``... URL NAME LEDGER work KIND`` takes the lease (TTL 3 s) and does 4 s of GPU work: in a
thread through ``lease.run(in_thread(...))`` (KIND ``thread``) or blocking the event loop
(KIND ``blocking``); it writes ``working``, then ``work-end <ns>`` and how the hold ended.
``... URL NAME LEDGER next`` queues for it (TTL 3 s), writes ``queued``, then
``granted <ns>`` or ``refused <error>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
import time

from gpuguard import GpuGuard, GuardError, Priority, in_thread


def log(ledger: str, line: str) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def one(guard: GpuGuard, ledger: str, rng: random.Random, n: int) -> None:
    async with guard.hold(
        f"op{n}", priority=rng.choice(list(Priority)), wait_timeout=rng.choice([0.05, 0.5, 5.0])
    ) as lease:
        log(ledger, f"start {lease.fence} {time.monotonic_ns()} {os.getpid()}")
        try:
            await asyncio.sleep(rng.uniform(0.0, 0.01))
        finally:
            log(ledger, f"end {lease.fence} {time.monotonic_ns()} {os.getpid()}")


async def hammer(url: str, name: str, ledger: str, seed: int, ops: int) -> None:
    rng = random.Random(seed)
    guard = GpuGuard.redis(url, name, prefix="gpuguard-test-procs")
    try:
        for n in range(ops):
            task = asyncio.create_task(one(guard, ledger, rng, n))
            if rng.random() < 0.2:
                await asyncio.sleep(rng.uniform(0.0, 0.01))
                task.cancel()
            with contextlib.suppress(GuardError, asyncio.CancelledError):
                await task
    finally:
        await guard.aclose()


async def hold(url: str, name: str, ledger: str, host: str | None) -> None:
    if host is not None:  # its tickets name this host, as a process there would
        socket.gethostname = lambda: host
    guard = GpuGuard.redis(url, name, prefix="gpuguard-test-procs", ttl_s=1.0)
    lease = await guard.acquire("doomed")
    log(ledger, f"held {lease.fence}")
    await asyncio.Event().wait()


async def wait(url: str, name: str, ledger: str) -> None:
    guard = GpuGuard.redis(url, name, prefix="gpuguard-test-procs", ttl_s=1.0)
    hold = guard.hold("doomed-waiter", priority=Priority.INTERACTIVE)
    assert await hold.reserve()
    log(ledger, "queued")
    async with hold:
        log(ledger, "granted")


async def brief(url: str, name: str, ledger: str) -> None:
    guard = GpuGuard.redis(url, name, prefix="gpuguard-test-procs", ttl_s=60.0)
    hold = guard.hold("brief", priority=Priority.INTERACTIVE)
    assert await hold.reserve()
    log(ledger, "queued")
    async with hold:
        log(ledger, "granted")
    # No aclose(): asyncio.run cancels whatever this process left to do in the background.


async def work(url: str, name: str, ledger: str, kind: str) -> None:
    guard = GpuGuard.redis(url, name, prefix="gpuguard-test-procs", ttl_s=3.0)
    try:
        async with guard.hold("long-work") as lease:
            log(ledger, f"working {lease.fence}")
            if kind == "thread":
                await lease.run(in_thread(time.sleep, 4.0))
            else:
                time.sleep(4.0)  # noqa: ASYNC251  # blocks the event loop, on purpose
            log(ledger, f"work-end {time.monotonic_ns()}")
        log(ledger, "released")
    except GuardError as exc:
        log(ledger, f"work-end {time.monotonic_ns()}")
        log(ledger, f"failed {type(exc).__name__}: {exc}")
    finally:
        await guard.aclose()


async def next_(url: str, name: str, ledger: str) -> None:
    guard = GpuGuard.redis(url, name, prefix="gpuguard-test-procs", ttl_s=3.0)
    try:
        hold = guard.hold("next", wait_timeout=30.0)
        assert await hold.reserve()
        log(ledger, "queued")
        async with hold:
            log(ledger, f"granted {time.monotonic_ns()}")
    except GuardError as exc:
        log(ledger, f"refused {type(exc).__name__}")
    finally:
        await guard.aclose()


if __name__ == "__main__":
    url, name, ledger = sys.argv[1:4]
    if sys.argv[4] == "hold":
        asyncio.run(hold(url, name, ledger, sys.argv[5] if len(sys.argv) > 5 else None))
    elif sys.argv[4] == "wait":
        asyncio.run(wait(url, name, ledger))
    elif sys.argv[4] == "brief":
        asyncio.run(brief(url, name, ledger))
    elif sys.argv[4] == "work":
        asyncio.run(work(url, name, ledger, sys.argv[5]))
    elif sys.argv[4] == "next":
        asyncio.run(next_(url, name, ledger))
    else:
        asyncio.run(hammer(url, name, ledger, int(sys.argv[4]), int(sys.argv[5])))
