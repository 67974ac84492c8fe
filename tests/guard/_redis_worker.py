"""One process of the multi-process Redis tests: random holds, logged to a shared ledger.

``python -m tests.guard._redis_worker URL NAME LEDGER SEED OPS`` runs ``OPS`` operations with
random priorities, hold times, wait timeouts and cancellations against the lease ``NAME``,
and appends ``start``/``end`` lines (fence, system-wide monotonic time) to ``LEDGER``.
``... URL NAME LEDGER hold`` takes the lease, writes ``held`` and waits to be killed;
``... URL NAME LEDGER wait`` queues for it, writes ``queued`` and waits to be killed.
``... URL NAME LEDGER brief`` queues for it (lease TTL 60 s), writes ``queued``, and once
granted releases it and exits at once, without closing the guard: a short script's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time

from gpuguard import GpuGuard, GuardError, Priority


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


async def hold(url: str, name: str, ledger: str) -> None:
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


if __name__ == "__main__":
    url, name, ledger = sys.argv[1:4]
    if sys.argv[4] == "hold":
        asyncio.run(hold(url, name, ledger))
    elif sys.argv[4] == "wait":
        asyncio.run(wait(url, name, ledger))
    elif sys.argv[4] == "brief":
        asyncio.run(brief(url, name, ledger))
    else:
        asyncio.run(hammer(url, name, ledger, int(sys.argv[4]), int(sys.argv[5])))
