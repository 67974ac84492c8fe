"""A second lease on one GPU name, whatever the scope: reported loudly, never silent.

Real processes: one holds through one scope (host, Redis, process), this process is granted
the same GPU name through another; the machine-wide mark tells it who the other holder is.
Processes that share one lease hand the GPU on without a report.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpuguard import GpuGuard
from tests.guard.redis_support import REDIS_URL, delete_keys, require_redis

from ._fault_worker import guard_in
from .conftest import Processes, finish, line

SECOND = "second lease on GPU"


@pytest.fixture
async def gpu() -> AsyncIterator[str]:
    """A GPU name of this test alone (the mark is machine-wide), and no Redis key left."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await delete_keys(REDIS_URL, name)


def where(scope: str, tmp_path: Path, side: str) -> str:
    if scope == "redis":
        require_redis()
        return REDIS_URL
    return str(tmp_path / side)


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("host", "process"),
        ("process", "host"),
        ("host", "redis"),
        ("redis", "host"),
        ("redis", "process"),
        ("process", "process"),
    ],
)
async def test_a_second_lease_on_one_gpu_is_reported_with_the_other_holder(
    tmp_path: Path,
    processes: Processes,
    caplog: pytest.LogCaptureFixture,
    gpu: str,
    theirs: str,
    ours: str,
) -> None:
    holder = await processes.fault("hold-in", theirs, gpu, where(theirs, tmp_path, "a"))
    assert await line(holder) == "held"
    caplog.set_level(logging.WARNING, logger="gpuguard.guard")

    guard = guard_in(ours, gpu, where(ours, tmp_path, "b"))
    lease = guard.acquire_nowait("second")
    assert f"{SECOND} {gpu}" in caplog.text
    assert f"pid {holder.pid} (" in caplog.text
    lease.release()
    await guard.aclose()
    assert await finish(holder) == 0


@pytest.mark.parametrize("scope", ["host", "redis"])
async def test_processes_sharing_one_lease_hand_it_on_without_a_report(
    tmp_path: Path, processes: Processes, caplog: pytest.LogCaptureFixture, gpu: str, scope: str
) -> None:
    place = where(scope, tmp_path, "a")
    holder = await processes.fault("hold-in", scope, gpu, place)
    assert await line(holder) == "held"
    caplog.set_level(logging.WARNING, logger="gpuguard.guard")

    guard = guard_in(scope, gpu, place)
    request = guard.hold("next", wait_timeout=30)
    assert await request.reserve()  # queued behind the other process
    assert holder.stdin is not None
    holder.stdin.write(b"release\n")
    async with request:
        assert SECOND not in caplog.text
    assert await line(holder) == "released"
    await guard.aclose()
    assert await finish(holder) == 0


async def test_every_grant_beside_a_second_lease_is_reported_however_many(
    tmp_path: Path, processes: Processes, caplog: pytest.LogCaptureFixture, gpu: str
) -> None:
    """The holder never answers the probes; once its backlog is full, a grant beside it is
    still reported (without the pid) instead of passing in silence."""
    holder = await processes.fault("hold-in", "host", gpu, str(tmp_path / "a"))
    assert await line(holder) == "held"
    caplog.set_level(logging.WARNING, logger="gpuguard.guard")

    guard = GpuGuard.host(gpu, lock_dir=tmp_path / "b")
    grants = 80
    for _ in range(grants):
        guard.acquire_nowait("again").release()
    reports = [r.getMessage() for r in caplog.records if SECOND in r.getMessage()]
    assert len(reports) == grants
    assert f"pid {holder.pid} (" in reports[0]
    assert "pid unknown" in reports[-1]
    assert await finish(holder) == 0


def test_a_child_forked_by_a_holder_does_not_keep_its_mark(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, gpu: str
) -> None:
    """A process-scope holder forks; after the parent released, the child (still running)
    holds no mark, so a host-wide holder of the same GPU is not told of a second lease."""
    guard = GpuGuard(gpu)
    lease = guard.acquire_nowait("parent")
    ready, started = os.pipe()
    child = os.fork()
    if child == 0:  # past the at-fork hooks: say so, then sleep until killed
        os.write(started, b"x")
        signal.pause()
        os._exit(0)
    try:
        assert os.read(ready, 1) == b"x"
        lease.release()
        caplog.set_level(logging.WARNING, logger="gpuguard.guard")
        GpuGuard.host(gpu, lock_dir=tmp_path).acquire_nowait("host").release()
        assert SECOND not in caplog.text
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(started)


async def test_an_idle_process_scope_guard_is_a_second_lease_all_the_same(
    tmp_path: Path, processes: Processes, caplog: pytest.LogCaptureFixture, gpu: str
) -> None:
    """Nobody shares a process-scope lease, so it keeps the mark after its holds: a
    host-wide holder meets it even while that program does not use the GPU."""
    program = await processes.fault("hold-in", "process", gpu, "-")
    assert await line(program) == "held"
    assert program.stdin is not None
    program.stdin.write(b"release\n")
    assert await line(program) == "released"
    caplog.set_level(logging.WARNING, logger="gpuguard.guard")

    GpuGuard.host(gpu, lock_dir=tmp_path).acquire_nowait("host").release()
    assert f"{SECOND} {gpu}" in caplog.text
    assert f"pid {program.pid} (" in caplog.text
    assert await finish(program) == 0


async def test_two_leases_of_one_process_meet_on_the_mark_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, gpu: str
) -> None:
    """A process-scope guard that holds is reported to a host guard of the same process; an
    idle one gives its mark way without a report."""
    caplog.set_level(logging.WARNING, logger="gpuguard.guard")
    local, host = GpuGuard(gpu), GpuGuard.host(gpu, lock_dir=tmp_path)
    held = local.acquire_nowait("local")
    host.acquire_nowait("host").release()
    assert f"{SECOND} {gpu}" in caplog.text
    assert f"pid {os.getpid()} (" in caplog.text
    held.release()
    caplog.clear()

    host.acquire_nowait("host").release()
    assert SECOND not in caplog.text
    await local.aclose()
