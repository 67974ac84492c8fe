"""``gpuguard run -- CMD ARGS...`` as a user runs it: real processes sharing the host lease."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from gpuguard import GpuGuard, Priority

from .._processes import gone, wait_for
from .conftest import Processes, entries, line

# A child that says it runs, then waits; SIGTERM makes it report and exit 7.
PATIENT_CHILD = """
import os, signal, sys, time
def stop(signum, frame):
    print("got", signum, flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, stop)
print("running", os.getpid(), flush=True)
time.sleep(60)
"""


async def test_returns_the_programs_exit_status_and_frees_the_gpu(
    tmp_path: Path, processes: Processes
) -> None:
    run = await processes.gpuguard(
        "run", "--", sys.executable, "-c", "import sys; print('on gpu'); sys.exit(3)"
    )
    assert await line(run) == "on gpu"
    assert await asyncio.wait_for(run.wait(), 30) == 3
    guard = GpuGuard.host(lock_dir=os.environ["GPUGUARD_GUARD__LOCK_DIR"])
    assert guard.current is None


async def test_waits_behind_the_holder_and_says_who_holds_it(processes: Processes) -> None:
    lock_dir = Path(os.environ["GPUGUARD_GUARD__LOCK_DIR"])
    guard = GpuGuard.host(lock_dir=lock_dir)
    lease = await guard.acquire("chat", model="llama")
    run = await processes.gpuguard(
        "run",
        "--priority",
        "background",
        "--operation",
        "train",
        "--",
        sys.executable,
        "-c",
        "print('trained')",
    )
    notice = await line(run, stderr=True)
    assert notice == f"Waiting for GPU... (held by chat, pid {os.getpid()})"
    [waiter] = guard.snapshot().waiters
    assert (waiter.operation, waiter.priority, waiter.pid) == (
        "train",
        Priority.BACKGROUND,
        run.pid,
    )
    lease.release()
    assert await line(run) == "trained"
    assert await asyncio.wait_for(run.wait(), 30) == 0
    assert guard.current is None
    assert entries(lock_dir) == []


async def test_sigterm_is_forwarded_and_the_childs_status_returned(processes: Processes) -> None:
    run = await processes.gpuguard("run", "--", sys.executable, "-c", PATIENT_CHILD)
    assert (await line(run)).startswith("running")
    run.send_signal(signal.SIGTERM)
    assert await line(run) == f"got {int(signal.SIGTERM)}"
    assert await asyncio.wait_for(run.wait(), 30) == 7


async def test_sigint_while_waiting_leaves_the_queue(processes: Processes) -> None:
    guard = GpuGuard.host(lock_dir=os.environ["GPUGUARD_GUARD__LOCK_DIR"])
    lease = await guard.acquire("chat")
    run = await processes.gpuguard("run", "--", sys.executable, "-c", "print('never')")
    assert (await line(run, stderr=True)).startswith("Waiting for GPU...")
    run.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(run.wait(), 30) == 128 + int(signal.SIGINT)
    assert guard.queue_length == 0
    lease.release()
    assert run.stdout is not None
    assert await run.stdout.read() == b""


async def test_the_lease_dies_with_the_gpuguard_process(processes: Processes) -> None:
    run = await processes.gpuguard(
        "run", "--operation", "train", "--", sys.executable, "-c", PATIENT_CHILD
    )
    child_pid = int((await line(run)).split()[1])
    guard = GpuGuard.host(lock_dir=os.environ["GPUGUARD_GUARD__LOCK_DIR"])
    waiting = asyncio.ensure_future(guard.acquire("chat", priority=Priority.INTERACTIVE))
    await asyncio.sleep(0)
    assert guard.current is not None
    assert (guard.current.operation, guard.current.pid) == ("train", run.pid)
    run.send_signal(signal.SIGKILL)
    lease = await asyncio.wait_for(waiting, 1.0)
    lease.release()
    # The kernel killed the program with it (its death signal): nothing runs unguarded.
    await asyncio.to_thread(wait_for, lambda: gone(child_pid), "the program to die with gpuguard")
