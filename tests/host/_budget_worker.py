"""A process that shares a host-scope lease under the budget policy (``python -m``).

Each process reads the same fake 80 GiB GPU (no headroom), so every process admits
against the same numbers. Sizes are in GiB. The GPU is named after the lock directory
(:func:`gpu_name`), so no other lease of this machine meets these on the machine-wide mark.

``wait DIR OP GIB``: ask; print ``queued`` if it had to wait, then ``granted``; hold until
stdin closes.
``hammer DIR LEDGER SEED ROUNDS``: random holds of random sizes and operations (``load``
among them) from three tasks; every hold appends ``pid start_ns end_ns bytes op`` to LEDGER.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from typing import Any

from gpuguard import GpuGuard, SystemClock
from gpuguard.devices import FakeDevices
from gpuguard.guard.policies import Budget
from gpuguard.guard.scopes import make_arbiter

GIB = 1024**3
TOTAL_GIB = 80


def gpu_name(lock_dir: str | os.PathLike[str]) -> str:
    """The GPU's name in ``lock_dir``: its own, unlike any other test's."""
    return f"budget-{os.path.basename(lock_dir)}"


def budget_guard(lock_dir: str, **options: Any) -> GpuGuard:
    """A host-scope guard of ``lock_dir`` under the budget on the fake GPU."""
    name = gpu_name(lock_dir)
    gpu = FakeDevices.with_gpus(TOTAL_GIB * 1024)
    policy = Budget(lambda: gpu.info(0), headroom_bytes=0)
    clock = SystemClock()
    arbiter = make_arbiter(
        "host", name, aging_s=30.0, clock=clock, lock_dir=lock_dir, policy=policy
    )
    return GpuGuard(name, clock=clock, arbiter=arbiter, **options)


def say(line: str) -> None:
    print(line, flush=True)


async def wait(lock_dir: str, operation: str, gib: int) -> None:
    guard = budget_guard(lock_dir, wait_timeout=None)
    request = guard.hold(operation, model="m", memory_bytes=gib * GIB)
    if await request.reserve():
        say("queued")
    async with request:
        say("granted")
        await asyncio.to_thread(sys.stdin.read)


async def hammer(lock_dir: str, ledger: str, seed: int, rounds: int) -> None:
    guard = budget_guard(lock_dir, max_waiters=1000)
    rng = random.Random(seed)
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND)

    async def one() -> None:
        size = rng.choice([10, 20, 30, 50, 70]) * GIB
        operation = rng.choice(["chat", "chat", "embed", "load"])
        async with guard.hold(operation, memory_bytes=size):
            start = time.monotonic_ns()
            await asyncio.sleep(rng.random() * 0.004)
            end = time.monotonic_ns()
            os.write(fd, f"{os.getpid()} {start} {end} {size} {operation}\n".encode())

    async def task() -> None:
        for _ in range(rounds):
            await one()

    await asyncio.gather(task(), task(), task())
    os.close(fd)
    say("done")


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "wait":
        asyncio.run(wait(args[0], args[1], int(args[2])))
    elif mode == "hammer":
        asyncio.run(hammer(args[0], args[1], int(args[2]), int(args[3])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
