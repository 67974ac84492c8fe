"""``gpuguard run`` says when it got the GPU after waiting (and nothing when it did not wait)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from gpuguard import GpuGuard

from .conftest import Processes, line


async def test_run_says_when_it_got_the_gpu(processes: Processes) -> None:
    guard = GpuGuard.host(lock_dir=Path(os.environ["GPUGUARD_GUARD__LOCK_DIR"]))
    lease = await guard.acquire("chat", model="llama")
    run = await processes.gpuguard("run", "--", sys.executable, "-c", "print('trained')")
    assert (await line(run, stderr=True)).startswith("Waiting for GPU... (held by chat")
    lease.release()
    granted = await line(run, stderr=True)
    assert re.fullmatch(r"got the GPU after \d+\.\d s", granted), granted
    assert await line(run) == "trained"
    assert await asyncio.wait_for(run.wait(), 30) == 0


async def test_run_that_did_not_wait_says_nothing_of_it(processes: Processes) -> None:
    run = await processes.gpuguard("run", "--", sys.executable, "-c", "print('trained')")
    assert await line(run) == "trained"
    assert await asyncio.wait_for(run.wait(), 30) == 0
    assert run.stderr is not None
    assert await run.stderr.read() == b""
