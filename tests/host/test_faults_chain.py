"""The watch chain under faults: each death or departure along the line is seen by someone.

Each waiting process watches one entry: the head's process the holder's, every other the
request just ahead of its first waiter. These tests kill and withdraw processes along the
line and read the order of grants from an external ledger. Nothing polls, so a death nobody
watched is never seen: every wait is bounded, and such a test fails instead of hanging.
Snapshots (themselves decisions, which would repair what they find) are taken only while
the line is settled, never between a fault and the grant it must cause.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpuguard import GpuGuard

from ._chain_worker import gpu_name
from .conftest import Processes, entries, finish, line

GRANT_TIMEOUT_S = 15.0
"""Bound on a grant that must come (a loaded 2-core machine), not a race: nothing polls."""

AGING_S = "6"
"""Aging of the test that waits for a rise: long enough that the next process has queued."""


async def in_line(
    processes: Processes,
    lock_dir: Path,
    names: list[str],
    *,
    then: str = "hold",
    timeout: str = "-",
) -> list[asyncio.subprocess.Process]:
    """One process per name, queued one after the other (so in this order, FIFO)."""
    queued = []
    for name in names:
        ledger = lock_dir.parent / "ledger"
        ledger.touch()
        process = await processes.chain("wait", str(lock_dir), str(ledger), name, timeout, then)
        assert await line(process) == ("granted" if name == "holder" else "queued")
        queued.append(process)
    return queued


async def say_to(process: asyncio.subprocess.Process, command: str) -> None:
    assert process.stdin is not None
    process.stdin.write(f"{command}\n".encode())
    await process.stdin.drain()


def grants(lock_dir: Path) -> list[str]:
    """Who was granted, in order, by the ledger."""
    return (lock_dir.parent / "ledger").read_text().split()


def pids(lock_dir: Path, aging_s: float = 30.0) -> tuple[int | None, list[int | None]]:
    """The holder's pid and the waiters' pids in service order, as any process sees them."""
    snapshot = GpuGuard.host(gpu_name(lock_dir), lock_dir=lock_dir, aging_s=aging_s).snapshot()
    holder = None if snapshot.holder is None else snapshot.holder.pid
    return holder, [waiter.pid for waiter in snapshot.waiters]


async def killed(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL


@pytest.mark.parametrize("when", ["racing the release", "once granted"])
async def test_a_head_killed_as_the_holder_releases_hands_the_gpu_on_in_order(
    tmp_path: Path, processes: Processes, when: str
) -> None:
    """The head dies as the holder releases: killed just before the release is asked for
    (the release may grant it a moment before it ends, or find it dead), or killing itself
    once granted. Either way the next in line, which watched the head, is granted, and
    the last one after it."""
    lock_dir = tmp_path / "locks"
    [holder] = await in_line(processes, lock_dir, ["holder"])
    [head] = await in_line(
        processes, lock_dir, ["head"], then="die" if when == "once granted" else "hold"
    )
    second, third = await in_line(processes, lock_dir, ["second", "third"])
    assert pids(lock_dir) == (holder.pid, [head.pid, second.pid, third.pid])

    if when == "racing the release":
        head.send_signal(signal.SIGKILL)
    await say_to(holder, "release")
    assert (await line(holder)).startswith("released")
    assert await line(second, GRANT_TIMEOUT_S) == "granted"

    assert await head.wait() == -signal.SIGKILL
    assert pids(lock_dir) == (second.pid, [third.pid])
    await say_to(second, "release")
    assert await line(third, GRANT_TIMEOUT_S) == "granted"
    head_granted = ["head"] if when == "once granted" else []
    assert grants(lock_dir) == ["holder", *head_granted, "second", "third"]
    assert [await finish(p) for p in (holder, second, third)] == [0, 0, 0]
    assert entries(lock_dir, gpu_name(lock_dir)) == []


async def test_each_killed_holder_is_seen_by_the_next_in_line(
    tmp_path: Path, processes: Processes
) -> None:
    """The holder is SIGKILLed with three processes waiting, then each one granted after it:
    no process releases, so only the watch of the one ahead tells each in turn."""
    lock_dir = tmp_path / "locks"
    holder, first, second, third = await in_line(
        processes, lock_dir, ["holder", "first", "second", "third"]
    )
    await killed(holder)
    assert await line(first, GRANT_TIMEOUT_S) == "granted"
    assert pids(lock_dir) == (first.pid, [second.pid, third.pid])
    await killed(first)
    assert await line(second, GRANT_TIMEOUT_S) == "granted"
    await killed(second)
    assert await line(third, GRANT_TIMEOUT_S) == "granted"
    assert grants(lock_dir) == ["holder", "first", "second", "third"]
    assert await finish(third) == 0
    assert entries(lock_dir, gpu_name(lock_dir)) == []


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_waiter_leaving_mid_line_passes_its_watch_on(
    tmp_path: Path, processes: Processes, how: str
) -> None:
    """The middle waiter of three leaves (cancelled, or its wait times out): the one behind it
    watched it, looks again and watches the one ahead, so when that one dies holding, the
    last is granted."""
    lock_dir = tmp_path / "locks"
    holder, first = await in_line(processes, lock_dir, ["holder", "first"])
    [middle] = await in_line(
        processes, lock_dir, ["middle"], timeout="1.0" if how == "timeout" else "-"
    )
    [last] = await in_line(processes, lock_dir, ["last"])
    if how == "cancel":
        await say_to(middle, "cancel")
    assert await line(middle, GRANT_TIMEOUT_S) == "left"
    assert pids(lock_dir) == (holder.pid, [first.pid, last.pid])

    await killed(holder)
    assert await line(first, GRANT_TIMEOUT_S) == "granted"
    await killed(first)
    assert await line(last, GRANT_TIMEOUT_S) == "granted"
    assert grants(lock_dir) == ["holder", "first", "last"]
    assert [await finish(p) for p in (middle, last)] == [0, 0]
    assert entries(lock_dir, gpu_name(lock_dir)) == []


def _can_unshare_network() -> bool:
    if shutil.which("unshare") is None:
        return False  # pragma: no cover - util-linux is everywhere these tests run
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


async def line_after_looks(process: asyncio.subprocess.Process) -> str:
    """The next line that is not a ``looked K`` one."""
    while (said := await line(process, GRANT_TIMEOUT_S)).startswith("looked"):
        pass
    return said


async def test_a_waiter_aged_to_the_head_watches_the_holder_with_no_datagram(
    tmp_path: Path, processes: Processes
) -> None:
    """A process in its own network namespace (a container on its own network) gets no
    datagram from the others. Its background waiter, queued before a normal one, ages past
    it to head the line: it looks again as it rises (nobody could tell it) and watches the
    holder, so the holder's release hands it the GPU, and then the normal one."""
    if not _can_unshare_network():
        pytest.skip("needs unshare -n (root)")  # pragma: no cover
    lock_dir = tmp_path / "locks"
    ledger = tmp_path / "ledger"
    ledger.touch()

    def args(name: str, priority: str) -> tuple[str, ...]:
        return ("wait", str(lock_dir), str(ledger), name, "-", "hold", priority, AGING_S)

    holder = await processes.chain(*args("holder", "normal"))
    assert await line(holder) == "granted"
    aged = await processes.start(
        "unshare", "-n", sys.executable, "-m", "tests.host._chain_worker",
        *args("aged", "background"), CHAIN_SAY_LOOKS="1",
    )  # fmt: skip
    assert {await line(aged), await line(aged)} == {"queued", "looked 1"}
    normal = await processes.chain(*args("normal", "normal"))
    assert await line(normal) == "queued"
    assert pids(lock_dir, float(AGING_S)) == (holder.pid, [normal.pid, aged.pid])

    while pids(lock_dir, float(AGING_S)) != (holder.pid, [aged.pid, normal.pid]):
        said = await line(aged, GRANT_TIMEOUT_S)  # it looks as it rises (and every half second)
        assert said.startswith("looked"), said
    await say_to(holder, "release")
    assert await line_after_looks(aged) == "granted"
    await say_to(aged, "release")
    assert await line(normal, GRANT_TIMEOUT_S) == "granted"
    assert grants(lock_dir) == ["holder", "aged", "normal"]
    assert [await finish(p) for p in (holder, aged, normal)] == [0, 0, 0]
    assert entries(lock_dir, gpu_name(lock_dir)) == []
