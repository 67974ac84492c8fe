"""Several GPUs: what choosing the GPU with room costs, beside one GPU, in one run.

Prints two tables, side by side in one process:

1. ``GpuSet.place()`` per call: one GPU (never read), two GPUs under ``exclusive``, two
   GPUs under the budget (fake NVML: each call takes both GPUs' snapshots);
2. bulk embedding through ``BulkEmbedder`` with hashing embedders (no model: the pipeline's
   own cost per batch): one GPU, then two GPUs whose batches try the GPUs in room order.

Usage: ``python bench/gpu_placement.py [--calls 20000] [--texts 20000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from gpuguard import GpuGuard, GpuSet
from gpuguard.devices import FakeDevices
from gpuguard.embed import BulkEmbedder, EmbedderPair
from gpuguard.settings import build_guards, load_settings
from gpuguard.testing import HashEmbedder


def _sets() -> dict[str, GpuSet]:
    devices = FakeDevices.with_gpus(80 * 1024, 80 * 1024)
    budget = load_settings(guard={"scope": "process", "policy": "budget", "name": "bench0"})
    first = GpuGuard("bench-x0")
    return {
        "one GPU": GpuSet.single(GpuGuard("bench-one")),
        "two GPUs, exclusive": GpuSet({0: first, 1: GpuGuard("bench-x1", events=first.events)}),
        "two GPUs, budget": build_guards(budget.guard, detect=lambda: devices),
    }


def place_cost(calls: int) -> dict[str, float]:
    """Microseconds per ``place()``."""
    costs = {}
    for name, gpus in _sets().items():
        started = time.perf_counter()
        for _ in range(calls):
            gpus.place()
        costs[name] = (time.perf_counter() - started) / calls * 1e6
    return costs


async def bulk_cost(texts: int, gpus: GpuSet) -> float:
    """Microseconds per batch of 32 hashed texts through the bulk pipeline."""
    cpu = HashEmbedder(dimension=64)
    pairs = [
        (guard, EmbedderPair(HashEmbedder(dimension=64, device="cuda"), cpu)) for guard in gpus
    ]
    for _, pair in pairs:
        await pair.start(None)
    (guard, pair), *more = pairs
    bulk = BulkEmbedder(
        pair,
        guard,
        batch_size=32,
        more_gpus=more,
        by_room=lambda: [g.name for g in gpus.by_room()],
    )
    batches = 0
    started = time.perf_counter()
    async with bulk.embed_batches(f"text number {i}" for i in range(texts)) as run:
        async for _ in run:
            batches += 1
    return (time.perf_counter() - started) / batches * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    costs = place_cost(options.calls)
    print(f"\nGpuSet.place(), {options.calls} calls")
    print(f"{'set':<22} {'us/call':>9} {'x one GPU':>10}")
    for name, cost in costs.items():
        print(f"{name:<22} {cost:9.2f} {cost / costs['one GPU']:10.1f}")
    sets = _sets()
    ones, twos = [], []
    for _ in range(options.rounds):  # alternated, so that a busy moment hits both
        ones.append(await bulk_cost(options.texts, sets["one GPU"]))
        twos.append(await bulk_cost(options.texts, sets["two GPUs, budget"]))
    one, two = statistics.median(ones), statistics.median(twos)
    print(
        f"\nbulk embedding, {options.texts} texts, 32 a batch (hashing embedders), "
        f"median of {options.rounds} alternated rounds"
    )
    print(f"{'GPUs':<22} {'us/batch':>9} {'x one GPU':>10}")
    print(f"{'one':<22} {one:9.1f} {1.0:10.2f}")
    print(f"{'two (budget, by room)':<22} {two:9.1f} {two / one:10.2f}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
