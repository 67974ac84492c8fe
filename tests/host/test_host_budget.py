"""The host scope under the budget policy, across real processes: a ledger in the state."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
from pathlib import Path

from gpuguard import GpuGuard
from gpuguard.guard.scopes.host._lease_dir import LeaseDir
from gpuguard.guard.scopes.host._state import State

from ._budget_worker import GIB, TOTAL_GIB, gpu_name
from .conftest import Processes, entries, finish, line

HAMMER_ROUNDS = 30


async def budget_worker(processes: Processes, *args: str) -> asyncio.subprocess.Process:
    return await processes.start(sys.executable, "-m", "tests.host._budget_worker", *args)


def holding(lock_dir: Path) -> list[int]:
    """The pids that hold the lease now, oldest first (as any process sees them)."""
    return [
        holder.pid or 0
        for holder in GpuGuard.host(gpu_name(lock_dir), lock_dir=lock_dir).snapshot().holders
    ]


def waiting(lock_dir: Path) -> list[int]:
    """The pids that wait, in service order."""
    return [
        w.pid or 0 for w in GpuGuard.host(gpu_name(lock_dir), lock_dir=lock_dir).snapshot().waiters
    ]


async def test_two_processes_hold_together_only_while_the_sum_fits(
    tmp_path: Path, processes: Processes
) -> None:
    """Two processes hold at random sizes; an external ledger of their holds shows that at
    no instant the holds together exceeded the GPU, two loads never overlapped, and holds of
    the two processes did overlap."""
    ledger = tmp_path / "ledger"
    ledger.touch()
    workers = [
        await budget_worker(
            processes, "hammer", str(tmp_path), str(ledger), str(seed), str(HAMMER_ROUNDS)
        )
        for seed in range(2)
    ]
    assert [await line(worker, timeout=120) for worker in workers] == ["done", "done"]
    assert [await worker.wait() for worker in workers] == [0, 0]

    events: list[tuple[int, int, int, int, str]] = []  # (time, +1 start / -1 end, pid, bytes, op)
    for row in ledger.read_text().splitlines():
        pid, start, end, size, operation = row.split()
        events.append((int(start), 1, int(pid), int(size), operation))
        events.append((int(end), -1, int(pid), int(size), operation))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    active: list[tuple[int, int, str]] = []
    across = 0
    for _, kind, who, bytes_, op in events:
        if kind < 0:
            active.remove((who, bytes_, op))
            continue
        active.append((who, bytes_, op))
        assert sum(s for _, s, _ in active) <= TOTAL_GIB * GIB
        assert sum(op == "load" for _, _, op in active) <= 1
        across += len({p for p, _, _ in active}) > 1
    assert across > 0
    assert len(events) == 2 * 2 * 3 * HAMMER_ROUNDS
    assert entries(tmp_path, gpu_name(tmp_path)) == []


async def test_a_big_head_is_not_starved_by_small_holds_of_another_process(
    tmp_path: Path, processes: Processes
) -> None:
    first = await budget_worker(processes, "wait", str(tmp_path), "chat", "30")
    assert await line(first) == "granted"
    beside = await budget_worker(processes, "wait", str(tmp_path), "chat", "30")
    assert await line(beside) == "granted"  # 60 of 80 GiB: granted at once beside the first
    big = await budget_worker(processes, "wait", str(tmp_path), "train", "60")
    assert await line(big) == "queued"
    small = await budget_worker(processes, "wait", str(tmp_path), "chat", "10")
    assert await line(small) == "queued"  # it would fit, but the big one heads the line
    assert holding(tmp_path) == [first.pid, beside.pid]
    assert waiting(tmp_path) == [big.pid, small.pid]

    assert await finish(first) == 0
    assert holding(tmp_path) == [beside.pid]  # 30 + 60 does not fit: the small one waits too
    assert waiting(tmp_path) == [big.pid, small.pid]
    assert await finish(beside) == 0
    assert await line(big) == "granted"
    assert await line(small) == "granted"  # 60 + 10 fits: beside the big one
    assert holding(tmp_path) == [big.pid, small.pid]
    assert [await finish(p) for p in (big, small)] == [0, 0]
    assert entries(tmp_path, gpu_name(tmp_path)) == []
    for worker in (first, beside, big, small):
        assert worker.stderr is not None
        assert "second lease" not in (await worker.stderr.read()).decode()


async def test_a_killed_co_holder_is_freed_by_the_kernel(
    tmp_path: Path, processes: Processes
) -> None:
    doomed = await budget_worker(processes, "wait", str(tmp_path), "chat", "50")
    assert await line(doomed) == "granted"
    beside = await budget_worker(processes, "wait", str(tmp_path), "chat", "20")
    assert await line(beside) == "granted"
    nxt = await budget_worker(processes, "wait", str(tmp_path), "chat", "40")
    assert await line(nxt) == "queued"

    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    assert await line(nxt) == "granted"  # 20 + 40 fits once the dead one's 50 is gone
    assert holding(tmp_path) == [beside.pid, nxt.pid]
    assert [await finish(p) for p in (beside, nxt)] == [0, 0]
    assert holding(tmp_path) == []
    assert entries(tmp_path, gpu_name(tmp_path)) == []


def test_a_state_an_older_process_wrote_reads_as_before() -> None:
    request = ["7", "chat", "m", 1, 42, "h", "p", 1.5, None, 3 * GIB]
    old = {"next": 2, "holder": [1, 2.0, None], "requests": {"1": request}, "teardown": None}
    state = State.decode(json.dumps(old).encode())
    assert state.holders == [(1, 2.0, None)]
    assert (state.requests[1].need, state.requests[1].wake) == (3 * GIB, None)
    assert State.decode(json.dumps({**old, "holder": None}).encode()).holders == []


def test_an_older_reader_finds_its_fields_and_the_oldest_holder() -> None:
    old_request = [7, "chat", "m", 1, 42, "h", "p", 1.5, None, 3 * GIB]
    old = {"next": 3, "holder": None, "requests": {"1": old_request, "2": old_request}}
    state = State.decode(json.dumps(old).encode())
    state.holders = [(2, 1.0, None), (1, 2.0, None)]
    written = json.loads(state.encode())
    assert written["holder"] == [2, 1.0, None]  # what an older process reads as the holder
    assert written["requests"] == {"1": old_request, "2": old_request}  # its ten fields
    assert State.decode(state.encode()).holders == state.holders


def test_a_watcher_still_holding_a_dead_entry_does_not_keep_it_alive(tmp_path: Path) -> None:
    """A watcher's shared lock, taken as the owner let go, is no owner's lock."""
    lease_dir = LeaseDir.open(tmp_path, "gpu0", group=None)
    owner = lease_dir.create_entry(0, os.getpid())
    watcher = lease_dir.open_entry(0)
    assert watcher is not None
    assert lease_dir.alive(0)
    os.close(owner)  # the owner dies
    fcntl.flock(watcher, fcntl.LOCK_SH)  # its watcher woke and has not closed yet
    assert not lease_dir.alive(0)
    os.close(watcher)
    lease_dir.close()
