"""Crashes at every step, full and damaged state, removed lock files: real processes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from gpuguard import GpuGuard, GuardUnavailable, WouldBlock

from .conftest import Processes, entries, finish, line

MAX_STEPS = 100
"""More system calls than any phase makes: a worker past them prints ``done``."""


@pytest.mark.parametrize("phase", ["hold", "queue", "release", "release to a waiter"])
async def test_a_sigkill_at_any_step_leaves_a_lease_the_next_process_repairs(
    tmp_path: Path, processes: Processes, phase: str
) -> None:
    """Kill a process at each file system call of taking, queueing for or releasing the
    lease: every time, a waiter already in line (this process) is granted, the next process
    to come works (no ``KeyError``), and nothing is left behind."""
    guard = GpuGuard.host(lock_dir=tmp_path, wait_timeout=None)
    for step in range(1, MAX_STEPS):
        blocker = guard.acquire_nowait("blocker") if phase == "queue" else None
        doomed = await processes.fault("crash", str(tmp_path), phase.split()[0], str(step))
        waiting = guard.hold("next") if phase == "release to a waiter" else None
        if phase.startswith("release"):
            assert await line(doomed) == "held"
            if waiting is not None:
                assert await waiting.reserve()
            assert doomed.stdin is not None
            doomed.stdin.write(b"release\n")
        code = await doomed.wait()
        if waiting is not None:
            async with waiting:
                assert guard.current is not None
        if blocker is not None:
            blocker.release()
        newcomer = GpuGuard.host(lock_dir=tmp_path)  # as a process started now sees it
        newcomer.acquire_nowait(f"after step {step}").release()
        assert (guard.current, guard.queue_length) == (None, 0)
        if code == 0:
            break
        assert code == -signal.SIGKILL
    else:
        pytest.fail(f"the {phase} phase never ended within {MAX_STEPS} system calls")
    assert step > 3  # it was killed inside the phase, several times
    assert entries(tmp_path) == []


async def test_a_full_file_system_refuses_the_request_and_never_grants_a_second_holder(
    tmp_path: Path, processes: Processes
) -> None:
    """Writes cut short by the kernel (RLIMIT_FSIZE: a short count, then EFBIG, as on a full
    tmpfs): the writer's request is refused, and the state stays whole for everyone else."""
    guard = GpuGuard.host(lock_dir=tmp_path)
    holder = guard.acquire_nowait("train")
    filler = await processes.fault("fsize", str(tmp_path), "4096")
    report = await line(filler, timeout=60)
    assert report.startswith("refused GuardUnavailable"), report
    assert "cannot be written" in report
    assert await finish(filler) == 0

    with pytest.raises(WouldBlock, match="held by train"):
        GpuGuard.host(lock_dir=tmp_path).acquire_nowait("second")
    assert guard.queue_length == 0  # its refused and dead requests left the line
    holder.release()
    GpuGuard.host(lock_dir=tmp_path).acquire_nowait("then").release()


async def test_a_release_that_cannot_write_the_state_still_frees_the_gpu(
    tmp_path: Path, processes: Processes
) -> None:
    """Releasing never fails: the entry is closed whatever happens, and the next process to
    decide (the waiter, told by the kernel) repairs the state and is granted."""
    holder = await processes.fault("release-on-full-disk", str(tmp_path))
    assert await line(holder) == "held"
    waiter = await processes.fault("wait", str(tmp_path), "next")
    assert await line(waiter) == "queued"
    assert holder.stdin is not None
    holder.stdin.write(b"release\n")
    assert await line(holder) == "released"
    assert await line(waiter, timeout=20) == "granted"
    assert await finish(waiter) == 0
    assert await finish(holder) == 0


@pytest.mark.parametrize("damage", [b"", b'{"next": 3, "holder": [2, 1.0, nu', b"\x00" * 64])
async def test_an_unreadable_state_is_an_error_while_a_holder_lives_never_a_free_gpu(
    tmp_path: Path, processes: Processes, damage: bytes
) -> None:
    holder = await processes.fault("hold", str(tmp_path), "train", "600")
    assert await line(holder) == "held"
    for slot in ("state.0", "state.1"):
        (tmp_path / "gpu0" / slot).write_bytes(damage)

    guard = GpuGuard.host(lock_dir=tmp_path)
    with pytest.raises(GuardUnavailable, match=rf"while requests of pid {holder.pid} are alive"):
        guard.acquire_nowait("second")
    assert await finish(holder) == 0
    guard.acquire_nowait("then").release()  # nobody alive: rebuilt, not wedged


async def test_a_state_removed_under_a_live_holder_refuses_until_it_ends(
    tmp_path: Path, processes: Processes
) -> None:
    holder = await processes.fault("hold", str(tmp_path), "train", "600")
    assert await line(holder) == "held"
    for slot in ("state.0", "state.1"):
        (tmp_path / "gpu0" / slot).unlink()

    guard = GpuGuard.host(lock_dir=tmp_path)  # made anew, empty: not a free GPU
    with pytest.raises(GuardUnavailable, match=rf"is empty while requests of pid {holder.pid}"):
        guard.acquire_nowait("second")
    assert await finish(holder) == 0
    guard.acquire_nowait("then").release()


async def test_a_lock_directory_removed_under_a_live_lease_is_refused_and_reported(
    tmp_path: Path, processes: Processes, caplog: pytest.LogCaptureFixture
) -> None:
    """``rm -rf`` (logind at logout, RemoveIPC) under a holder and a waiter: the waiter of the
    old directory is refused rather than granted beside the new one's holder, and the new
    holder is told loudly that another process holds the same GPU."""
    holder = await processes.fault("hold", str(tmp_path), "train", "600")
    assert await line(holder) == "held"
    waiter = await processes.fault("wait", str(tmp_path), "old-waiter")
    assert await line(waiter) == "queued"
    shutil.rmtree(tmp_path / "gpu0")

    caplog.set_level(logging.WARNING, logger="gpuguard.guard")
    newcomer = GpuGuard.host(lock_dir=tmp_path).acquire_nowait("newcomer")
    assert "second lease on GPU gpu0" in caplog.text
    assert f"pid {holder.pid} ({Path(sys.executable).name[:15]}, uid {os.getuid()})" in caplog.text

    assert await finish(holder) == 0
    refusal = await line(waiter)
    assert refusal.startswith("refused GuardUnavailable"), refusal
    assert "was removed or replaced" in refusal
    newcomer.release()


async def test_a_request_number_given_again_after_a_rebuild_is_not_the_dead_request_it_was(
    tmp_path: Path, processes: Processes
) -> None:
    """A state rebuilt with nobody alive numbers requests from the entries left (none: from
    0), so a number comes back for another process's request. A process that looked at the
    first request of that number must not take the second for it (dead): before, it probed
    the descriptor it kept of the first file, found its lock free, dropped the live holder
    and was granted beside it."""
    guard = GpuGuard.host(lock_dir=tmp_path)
    first = await processes.fault("hold", str(tmp_path), "train", "600")
    assert await line(first) == "held"
    with pytest.raises(WouldBlock, match="held by train"):
        guard.acquire_nowait("probe")  # looks at the holder's entry, request 0
    assert await finish(first) == 0
    for slot in ("state.0", "state.1"):  # damaged with nobody alive: rebuilt from request 0
        (tmp_path / "gpu0" / slot).write_bytes(b"")
    second = await processes.fault("hold", str(tmp_path), "again", "600")
    assert await line(second) == "held"
    with pytest.raises(WouldBlock, match="held by again"):
        guard.acquire_nowait("probe")
    assert await finish(second) == 0
    guard.acquire_nowait("then").release()
