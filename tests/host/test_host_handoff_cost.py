"""A hand-off wakes the next process in line, not every waiting one: its cost stays flat.

N processes queue behind a holder and each releases the moment it is granted; each counts
the looks its watcher thread took (a look is a decision under the directory's lock). With
every waiting process woken by each release, the looks per hand-off grow with N (about
1 + (N + 1) / 2); with the watch chain they stay about 2 (its first look, and its grant).
"""

from __future__ import annotations

from pathlib import Path

from .conftest import Processes, finish, line
from .test_faults_chain import GRANT_TIMEOUT_S, grants, in_line, say_to


async def looks_per_hand_off(tmp_path: Path, processes: Processes, n: int) -> float:
    """The watchers' looks per hand-off down a line of ``n`` processes."""
    lock_dir = tmp_path / f"line-{n}" / "locks"
    lock_dir.parent.mkdir()
    [holder] = await in_line(processes, lock_dir, ["holder"])
    names = [f"w{i}" for i in range(n)]
    workers = await in_line(processes, lock_dir, names, then="pass")
    await say_to(holder, "release")
    reports = []
    for worker in workers:
        assert await line(worker, GRANT_TIMEOUT_S) == "granted"
        reports.append(await line(worker, GRANT_TIMEOUT_S))
    assert grants(lock_dir) == ["holder", *names]
    assert [await finish(p) for p in (holder, *workers)] == [0] * (n + 1)
    looks = [int(report.removeprefix("released looks=")) for report in reports]
    return sum(looks) / n


async def test_a_hand_off_wakes_the_next_process_not_every_waiting_one(
    tmp_path: Path, processes: Processes
) -> None:
    few, many = [await looks_per_hand_off(tmp_path, processes, n) for n in (2, 6)]
    assert many <= few + 1, f"looks per hand-off: {few} with 2 in line, {many} with 6"
