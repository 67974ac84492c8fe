"""The host scope across real processes: exclusion, snapshots, kernel liveness, the lock dir."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from pathlib import Path

import pytest
from rich.console import Console

from gpuguard import ConfigError, GpuGuard, Priority, WouldBlock
from gpuguard.cli._render import lane_view

from .conftest import Processes, entries, finish, line

HAMMER_PROCESSES = 6
HAMMER_ROUNDS = 40


async def test_many_processes_never_hold_at_once_and_leave_nothing_behind(
    tmp_path: Path, processes: Processes
) -> None:
    """Processes hammer one lease with random priorities, cancels and wait timeouts; an
    external ledger of their hold intervals shows no two ever overlapped."""
    ledger = tmp_path / "ledger"
    ledger.touch()
    workers = [
        await processes.worker("hammer", str(tmp_path), str(ledger), str(seed), str(HAMMER_ROUNDS))
        for seed in range(HAMMER_PROCESSES)
    ]
    reports = [await line(worker, timeout=120) for worker in workers]
    assert [await worker.wait() for worker in workers] == [0] * HAMMER_PROCESSES

    intervals = sorted(
        (int(start), int(end), pid)
        for pid, start, end in (row.split() for row in ledger.read_text().splitlines())
    )
    overlaps = [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]
    assert overlaps == []
    assert len({pid for _, _, pid in intervals}) == HAMMER_PROCESSES
    held = sum(int(report.split()[0].removeprefix("held=")) for report in reports)
    assert held == len(intervals)
    # Every cancel and timeout left the queue; nothing is left for anyone to clean.
    assert entries(tmp_path) == []
    guard = GpuGuard.host(lock_dir=tmp_path)
    assert (guard.current, guard.queue_length) == (None, 0)


async def test_snapshot_shows_holder_and_waiters_of_other_processes(
    tmp_path: Path, processes: Processes
) -> None:
    holder = await processes.worker("hold", str(tmp_path), "train")
    assert await line(holder) == "held"
    waiter = await processes.worker("wait", str(tmp_path), "index", "background")
    assert await line(waiter) == "queued"
    guard = GpuGuard.host(lock_dir=tmp_path)

    snapshot = guard.snapshot()
    assert snapshot.scope == "host"
    assert snapshot.holder is not None
    assert (snapshot.holder.operation, snapshot.holder.model, snapshot.holder.pid) == (
        "train",
        "m",
        holder.pid,
    )
    assert snapshot.holder.host is not None
    assert snapshot.holder.process is not None
    assert snapshot.holder.since <= time.monotonic()  # one system-wide monotonic clock
    [queued] = snapshot.waiters
    assert (queued.operation, queued.priority, queued.pid) == (
        "index",
        Priority.BACKGROUND,
        waiter.pid,
    )
    with pytest.raises(WouldBlock, match=rf"held by train \(pid {holder.pid}\)"):
        guard.acquire_nowait("peek")
    # `gpuguard status` renders the same object: it names the other processes.
    console = Console(record=True, width=200)
    console.print(lane_view({"snapshot": snapshot.to_dict(), "current": snapshot.holder.to_dict()}))
    shown = console.export_text()
    assert "train m (normal" in shown
    assert f"pid {holder.pid}, host {snapshot.holder.host}, process" in shown
    assert f"#1 index (pid {waiter.pid}, host {queued.host}, process {queued.process})" in shown
    assert "(exclusive, host)" in shown

    assert await finish(holder) == 0
    assert await line(waiter) == "granted"
    assert await finish(waiter) == 0
    assert guard.current is None
    assert entries(tmp_path) == []


async def test_sigkilled_holder_and_waiter_free_the_gpu_at_once(
    tmp_path: Path, processes: Processes
) -> None:
    """SIGKILL a waiter and then the holder mid-hold: the next waiter is granted within 1 s
    (the kernel drops their locks; no timer expires), and nothing is left behind."""
    holder = await processes.worker("hold", str(tmp_path), "train")
    assert await line(holder) == "held"
    doomed = await processes.worker("wait", str(tmp_path), "doomed", "interactive")
    assert await line(doomed) == "queued"
    nxt = await processes.worker("wait", str(tmp_path), "next", "normal")
    assert await line(nxt) == "queued"

    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    holder.send_signal(signal.SIGKILL)
    await holder.wait()
    killed_at = time.monotonic()
    assert await line(nxt, timeout=1.0) == "granted"
    granted_within = time.monotonic() - killed_at
    assert granted_within < 1.0

    guard = GpuGuard.host(lock_dir=tmp_path)
    current = guard.current
    assert current is not None
    assert current.pid == nxt.pid
    assert guard.queue_length == 0
    assert len(entries(tmp_path)) == 1  # only the live holder's
    assert await finish(nxt) == 0
    assert guard.current is None
    assert entries(tmp_path) == []


async def test_in_process_waiter_is_granted_when_a_holder_process_is_killed(
    tmp_path: Path, processes: Processes
) -> None:
    holder = await processes.worker("hold", str(tmp_path), "train")
    assert await line(holder) == "held"
    guard = GpuGuard.host(lock_dir=tmp_path)
    waiting = asyncio.ensure_future(guard.acquire("chat", priority=Priority.INTERACTIVE))
    await asyncio.sleep(0)
    assert guard.queue_length == 1
    holder.send_signal(signal.SIGKILL)
    lease = await asyncio.wait_for(waiting, 1.0)
    assert guard.current is not None
    assert guard.current.pid == os.getpid()
    lease.release()
    assert entries(tmp_path) == []


def test_lock_dir_is_created_owner_only(tmp_path: Path) -> None:
    lock_dir = tmp_path / "new" / "locks"
    GpuGuard.host("gpu1", lock_dir=lock_dir)
    assert lock_dir.stat().st_mode & 0o777 == 0o700
    assert (lock_dir / "gpu1").stat().st_mode & 0o777 == 0o700


def test_a_lock_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    lock_dir = tmp_path / "shared"
    lock_dir.mkdir(mode=0o777)
    lock_dir.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        GpuGuard.host(lock_dir=lock_dir)


def test_a_lock_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory away")  # pragma: no cover
    lock_dir = tmp_path / "theirs"
    lock_dir.mkdir(mode=0o700)
    os.chown(lock_dir, 12345, 12345)
    with pytest.raises(ConfigError, match="belongs to another user"):
        GpuGuard.host(lock_dir=lock_dir)


def test_default_lock_dir_is_the_machines_whatever_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login shell and a system service see different environments; they meet in one place."""
    from gpuguard.guard.scopes.host import SYSTEM_LOCK_DIR, default_lock_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    in_a_shell = default_lock_dir()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_lock_dir() == in_a_shell == SYSTEM_LOCK_DIR  # root may create it
