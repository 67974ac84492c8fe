"""A process that uses a host-scope guard, driven by the host tests (``python -m``).

``hold DIR OP``: take the GPU, print ``held``, keep it until stdin closes.
``wait DIR OP PRIORITY``: queue (print ``queued``), print ``granted`` once granted, keep it
until stdin closes.
``hammer DIR LEDGER SEED ROUNDS``: random holds, priorities, cancels and wait timeouts from
three tasks; every hold appends ``pid start_ns end_ns`` to LEDGER (O_APPEND: one write each).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time

from gpuguard import GpuGuard, Priority, WaitTimeout


def say(line: str) -> None:
    print(line, flush=True)


async def until_stdin_closes() -> None:
    await asyncio.to_thread(sys.stdin.read)


async def hold(lock_dir: str, operation: str) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir)
    async with guard.hold(operation, model="m"):
        say("held")
        await until_stdin_closes()


async def wait(lock_dir: str, operation: str, priority: str) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir, wait_timeout=None)
    request = guard.hold(operation, model="m", priority=Priority[priority.upper()])
    if await request.reserve():
        say("queued")
    async with request:
        say("granted")
        await until_stdin_closes()


async def hammer(lock_dir: str, ledger: str, seed: int, rounds: int) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir, max_waiters=1000, aging_s=0.05)
    rng = random.Random(seed)
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND)
    outcomes = {"held": 0, "timeout": 0, "cancelled": 0}

    async def one() -> None:
        priority = rng.choice(list(Priority))
        timeout = rng.choice([None, 0.002, 0.02, 0.2])
        async with guard.hold("hammer", priority=priority, wait_timeout=timeout):
            start = time.monotonic_ns()
            await asyncio.sleep(rng.random() * 0.002)
            end = time.monotonic_ns()
            os.write(fd, f"{os.getpid()} {start} {end}\n".encode())

    async def task() -> None:
        for _ in range(rounds):
            attempt = asyncio.ensure_future(one())
            if rng.random() < 0.2:
                await asyncio.sleep(rng.random() * 0.003)
                attempt.cancel()
            try:
                await attempt
                outcomes["held"] += 1
            except WaitTimeout:
                outcomes["timeout"] += 1
            except asyncio.CancelledError:
                outcomes["cancelled"] += 1

    await asyncio.gather(task(), task(), task())
    os.close(fd)
    with contextlib.suppress(BrokenPipeError):
        say(" ".join(f"{k}={v}" for k, v in outcomes.items()))


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "hold":
        asyncio.run(hold(args[0], args[1]))
    elif mode == "wait":
        asyncio.run(wait(args[0], args[1], args[2]))
    elif mode == "hammer":
        asyncio.run(hammer(args[0], args[1], int(args[2]), int(args[3])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
