"""A guard made before ``fork()``, and a holder that forks: real processes, external ledger."""

from __future__ import annotations

import itertools
from pathlib import Path

from gpuguard import GpuGuard

from .conftest import Processes, entries, finish, line

CHILDREN = 4
ROUNDS = 60


def overlaps(ledger: Path) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """Pairs of hold intervals (start, end, pid) of the ledger that overlap."""
    intervals = sorted(
        (int(start), int(end), int(pid))
        for pid, start, end in (row.split() for row in ledger.read_text().splitlines())
    )
    return [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]


async def test_children_of_a_guard_made_before_fork_never_hold_at_once(
    tmp_path: Path, processes: Processes
) -> None:
    """gunicorn --preload, Celery prefork: the children inherit the guard. They still exclude
    each other (each has descriptors of its own), by the ledger and by an independent flock."""
    ledger, sentinel = tmp_path / "ledger", tmp_path / "sentinel"
    ledger.touch()
    sentinel.touch()
    locks = tmp_path / "locks"
    parent = await processes.fault(
        "fork-hammer", str(locks), str(ledger), str(sentinel), str(CHILDREN), str(ROUNDS)
    )
    report = await line(parent, timeout=240)
    output = report + (await parent.stdout.read()).decode() if parent.stdout else report
    assert "overlap" not in output
    assert report == "codes " + " ".join(["0"] * CHILDREN), output
    assert overlaps(ledger) == []
    assert len(ledger.read_text().splitlines()) == CHILDREN * ROUNDS
    assert entries(locks) == []


async def test_a_holder_that_forks_does_not_leave_its_lock_in_the_child(
    tmp_path: Path, processes: Processes
) -> None:
    """The child of a holder keeps running after its parent released: the next waiter (in
    another process) is granted all the same, and the child holds nothing."""
    holder = await processes.fault("fork-holder", str(tmp_path))
    assert await line(holder) == "held"
    waiter = await processes.fault("wait", str(tmp_path), "next")
    assert await line(waiter) == "queued"

    assert holder.stdin is not None
    holder.stdin.write(b"release\n")
    assert await line(holder) == "released"
    assert await line(waiter, timeout=20) == "granted"
    current = GpuGuard.host(lock_dir=tmp_path).current
    assert current is not None
    assert current.pid == waiter.pid
    assert await finish(waiter) == 0
    assert await finish(holder) == 0
    assert entries(tmp_path) == []
