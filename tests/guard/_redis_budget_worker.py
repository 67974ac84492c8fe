"""One process of the Redis budget tests: holds a share of a fake 80-GiB GPU until killed.

``python -m tests.guard._redis_budget_worker URL NAME PREFIX LEDGER GIB`` asks the lease
``NAME`` (TTL 1 s) under the budget policy for ``chat`` needing ``GIB`` GiB, appends
``held <pid> <fence>`` to ``LEDGER`` once granted, and holds until it is killed.
"""

from __future__ import annotations

import asyncio
import os
import sys

from gpuguard import GpuGuard
from gpuguard.devices import FakeDevices
from gpuguard.guard.policies import Budget

from ._redis_worker import log

GIB = 1024**3


async def main(url: str, name: str, prefix: str, ledger: str, gib: int) -> None:
    gpu = FakeDevices.with_gpus(80 * 1024)
    policy = Budget(lambda: gpu.info(0), headroom_bytes=GIB)
    guard = GpuGuard.redis(url, name, prefix=prefix, ttl_s=1.0, policy=policy)
    lease = await guard.acquire("chat", memory_bytes=gib * GIB, wait_timeout=30.0)
    log(ledger, f"held {os.getpid()} {lease.fence}")
    await asyncio.Event().wait()


if __name__ == "__main__":
    url, name, prefix, ledger, gib = sys.argv[1:6]
    asyncio.run(main(url, name, prefix, ledger, int(gib)))
