"""A SIGSTOPped holder: its own timer cannot fire, so the others tell from the shared state."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from gpuguard import GpuGuard, WaitTimeout

from .conftest import Processes, finish, line

HOLD_S = 0.5


async def test_waiters_report_a_stopped_holder_past_its_deadline_as_hung(
    tmp_path: Path, processes: Processes
) -> None:
    holder = await processes.fault("hold", str(tmp_path), "train", str(HOLD_S))
    assert await line(holder) == "held"
    holder.send_signal(signal.SIGSTOP)
    guard = GpuGuard.host(lock_dir=tmp_path)
    current = guard.current
    assert current is not None
    await asyncio.sleep(max(0.0, current.since + HOLD_S - time.monotonic()))  # its deadline

    current = guard.current
    assert current is not None
    assert current.hung
    assert current.pid == holder.pid
    assert current.label.startswith("train (hung for ")
    assert f"pid {holder.pid}" in current.label
    with pytest.raises(WaitTimeout, match=rf"held by train \(hung for \d+s, pid {holder.pid}\)"):
        await guard.acquire("chat", wait_timeout=0.01)

    holder.send_signal(signal.SIGCONT)  # its own timer fires now: its hold ends as hung
    await finish(holder)
    assert guard.current is None
