"""The in-process queue and hold cost, beside asyncio.Lock and anyio.Lock (rows of guard_overhead).

Two rows, rounds interleaved between contenders so that the noise of a shared machine lands
on each of them:

* uncontended: one ``async with`` hold and release with nobody else around (median of the
  rounds' means, ns per op), against ``asyncio.Lock`` and, if installed, ``anyio.Lock``
  (default and ``fast_acquire=True``);
* joining a queue of N waiters: N tasks each enter the hold while it is held, run until each
  blocks; the time per waiter (joining) and then for all of them to be cancelled out of the
  line (leaving), per waiter. The guard's figure includes its ``waiting`` event with the
  place in line.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from time import perf_counter_ns
from types import ModuleType
from typing import Any

Hold = Callable[[], AbstractAsyncContextManager[object]]


def _contenders(baseline: ModuleType | None) -> dict[str, tuple[Hold, Callable[[int], Hold]]]:
    """Each name -> (a hold with nobody around, a factory of holds for a line of N waiters)."""
    from gpuguard import GpuGuard

    def lock(make: Callable[[], Any]) -> tuple[Hold, Callable[[int], Hold]]:
        one = make()

        def line(size: int) -> Hold:
            shared = make()
            return lambda: shared

        return (lambda: one), line

    def guard(cls: Any, label: str) -> tuple[Hold, Callable[[int], Hold]]:
        # A GPU name of its own: a guard bears its GPU's machine-wide mark, and a second
        # lease of the same GPU (the baseline's, another program's) warns on every grant.
        one = cls(f"bench-{os.getpid()}-{label}")

        def line(size: int) -> Hold:
            shared = cls(f"bench-{os.getpid()}-{label}-line", max_waiters=size + 1)
            return lambda: shared.hold("bench", model="m")

        return (lambda: one.hold("bench", model="m")), line

    found: dict[str, tuple[Hold, Callable[[int], Hold]]] = {"asyncio.Lock": lock(asyncio.Lock)}
    if importlib.util.find_spec("anyio") is not None:
        import anyio

        found["anyio.Lock"] = lock(anyio.Lock)
        found["anyio.Lock(fast_acquire=True)"] = lock(lambda: anyio.Lock(fast_acquire=True))
    found["GpuGuard (default)"] = guard(GpuGuard, "guard")
    if baseline is not None:
        found["baseline GpuGuard (default)"] = guard(baseline.GpuGuard, "baseline")
    return found


async def _uncontended(hold: Hold, iterations: int) -> float:
    start = perf_counter_ns()
    for _ in range(iterations):
        async with hold():
            pass
    return (perf_counter_ns() - start) / iterations


async def _line(make: Callable[[int], Hold], size: int) -> tuple[float, float]:
    """(ns per waiter to join a line of ``size``, ns per waiter to leave it cancelled)."""
    hold = make(size)

    async def wait() -> None:
        async with hold():
            pass

    async with hold():
        tasks = [asyncio.create_task(wait()) for _ in range(size)]
        start = perf_counter_ns()
        await asyncio.sleep(0)  # every task runs until it blocks in the line
        joined = perf_counter_ns() - start
        start = perf_counter_ns()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left = perf_counter_ns() - start
    return joined / size, left / size


async def rows(baseline: ModuleType | None, quick: bool) -> None:
    """Measure and print the rows."""
    rounds, iterations, size = (5, 5_000, 1_000) if quick else (15, 20_000, 1_000)
    contenders = _contenders(baseline)
    uncontended: dict[str, list[float]] = {name: [] for name in contenders}
    joins: dict[str, list[float]] = {name: [] for name in contenders}
    leaves: dict[str, list[float]] = {name: [] for name in contenders}
    for one, line in contenders.values():  # warm-up
        await _uncontended(one, iterations // 5)
        await _line(line, 100)
    for _ in range(rounds):
        for name, (one, line) in contenders.items():
            uncontended[name].append(await _uncontended(one, iterations))
            join, leave = await _line(line, size)
            joins[name].append(join)
            leaves[name].append(leave)
    base = statistics.median(uncontended["asyncio.Lock"])
    base_join = statistics.median(joins["asyncio.Lock"])
    print(f"\nIn-process queue and hold: {rounds} rounds x {iterations} holds, a line of {size}")
    header = (
        f"{'':34} {'uncontended':>12} {'ratio':>6} {'join/waiter':>12} {'ratio':>7} {'leave':>9}"
    )
    print(header)
    print(f"{'':34} {'ns/op':>12} {'':>6} {'ns':>12} {'':>7} {'ns':>9}")
    print("-" * len(header))
    for name in contenders:
        unc = statistics.median(uncontended[name])
        join = statistics.median(joins[name])
        leave = statistics.median(leaves[name])
        print(
            f"{name:34} {unc:12.0f} {unc / base:5.2f}x {join:12.0f} {join / base_join:6.2f}x "
            f"{leave:9.0f}"
        )
    print("-" * len(header))
    print("goals: uncontended <= 10x asyncio.Lock; joining O(1) or O(log n) in the line's length")
