"""``gpuguard run``: the lease lasts while any process of the program's tree lives, signals
reach the whole tree, and the exit status is the program's. Real process trees."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from gpuguard import GpuGuard

from .._processes import gone, parent_of, state_of, wait_for
from .conftest import GPUGUARD, ROOT, Processes, child_env, line

# Says who it is, then runs until the file named by argv[1] exists.
UNTIL_RELEASED = """
import os, pathlib, sys, time
print(f"child {os.getpid()}", flush=True)
release = pathlib.Path(sys.argv[1])
while not release.exists():
    time.sleep(0.01)
"""

# The middle process exits at once; its setsid'd child (the worker) runs until released.
# Each says who it is in one write: their lines must not interleave.
DOUBLE_FORK = """
import os, pathlib, sys, time
release = pathlib.Path(sys.argv[1])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(1, f"worker {os.getpid()}\\n".encode())
        while not release.exists():
            time.sleep(0.01)
        os._exit(0)
    os.write(1, f"middle {os.getpid()}\\n".encode())
    os._exit(0)
os.wait()
sys.exit(4)
"""

# Runs a tree and cancels its wait when a line comes on stdin: the tree must be gone first.
CANCELLED_WAIT = """
import asyncio, os, sys
from gpuguard.cli._tree import ProgramTree
async def main():
    tree = ProgramTree([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    waiting = asyncio.ensure_future(tree.wait())
    await asyncio.to_thread(sys.stdin.readline)
    waiting.cancel()
    try:
        await waiting
    except asyncio.CancelledError:
        os.write(1, b"cancelled\\n")
asyncio.run(main())
"""

# Reports the first signal it gets and exits 9; a second one would kill it (default action).
REPORTER = """
import os, signal, sys, time
def got(signum, frame):
    for name in NAMES:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    print("got", signum, flush=True)
    sys.exit(9)
NAMES = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH")
for name in NAMES:
    signal.signal(getattr(signal, name), got)
print("running", os.getpid(), flush=True)
while True:
    time.sleep(60)
"""

# Reports SIGTERM and exits 7.
PATIENT = """
import os, signal, sys, time
def stop(signum, frame):
    print("got", signum, flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, stop)
print("running", os.getpid(), flush=True)
time.sleep(60)
"""


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    """The file that lets the tree's processes end; made at the end whatever happened."""
    path = tmp_path / "release"
    yield path
    path.touch()


@pytest.fixture
def strays() -> Iterator[list[int]]:
    """Programs to SIGKILL at the end if still running (they hold the pipes the test reads)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def host_guard() -> GpuGuard:
    return GpuGuard.host(lock_dir=os.environ["GPUGUARD_GUARD__LOCK_DIR"])


async def held_by(pid: int) -> bool:
    current = host_guard().current
    return current is not None and current.pid == pid


async def test_the_lease_lasts_while_a_background_job_of_the_program_runs(
    processes: Processes, release: Path
) -> None:
    run = await processes.gpuguard(
        "run",
        "--",
        "sh",
        "-c",
        'echo sh $$; "$0" -c "$1" "$2" &',
        sys.executable,
        UNTIL_RELEASED,
        str(release),
    )
    shell = int((await line(run)).split()[1])
    child = int((await line(run)).split()[1])
    await asyncio.to_thread(wait_for, lambda: parent_of(child) != shell, "sh to exit")
    assert parent_of(child) == run.pid, "the program's background job was not kept by gpuguard"
    assert await held_by(run.pid)
    assert run.returncode is None
    await asyncio.to_thread(release.touch)
    assert await asyncio.wait_for(run.wait(), 30) == 0
    assert host_guard().current is None


async def test_the_lease_lasts_while_a_double_forked_worker_runs(
    processes: Processes, release: Path
) -> None:
    run = await processes.gpuguard("run", "--", sys.executable, "-c", DOUBLE_FORK, str(release))
    said = dict(((await line(run)).split(), (await line(run)).split()))
    worker, middle = int(said["worker"]), int(said["middle"])
    await asyncio.to_thread(wait_for, lambda: parent_of(worker) != middle, "the fork to exit")
    assert parent_of(worker) == run.pid, "the double-forked worker escaped gpuguard"
    assert await held_by(run.pid)
    await asyncio.to_thread(release.touch)
    assert await asyncio.wait_for(run.wait(), 30) == 4  # the program's own status
    assert host_guard().current is None


async def test_sigterm_reaches_the_program_a_shell_runs(
    processes: Processes, strays: list[int]
) -> None:
    run = await processes.gpuguard(
        "run", "--", "bash", "-c", '"$0" -c "$1"; echo after', sys.executable, PATIENT
    )
    strays.append(int((await line(run)).split()[1]))
    run.send_signal(signal.SIGTERM)
    assert await line(run) == f"got {int(signal.SIGTERM)}"  # not only bash got it
    assert await asyncio.wait_for(run.wait(), 30) == 128 + int(signal.SIGTERM)  # bash's end


@pytest.mark.parametrize(
    "signum", [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH]
)
async def test_signals_are_passed_on_and_the_programs_status_returned(
    signum: signal.Signals, processes: Processes, strays: list[int]
) -> None:
    run = await processes.gpuguard("run", "--", sys.executable, "-c", REPORTER)
    strays.append(int((await line(run)).split()[1]))
    run.send_signal(signum)
    assert await line(run) == f"got {int(signum)}"
    assert await asyncio.wait_for(run.wait(), 30) == 9


def stopped(pid: int) -> bool:
    return state_of(pid) == "T"


async def start_as_a_job(processes: Processes, *argv: str) -> asyncio.subprocess.Process:
    """``gpuguard ARGV`` in a process group of its own, as a shell runs a job."""
    run = await asyncio.create_subprocess_exec(
        str(GPUGUARD),
        *argv,
        cwd=ROOT,
        env=child_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    processes.started.append(run)
    return run


async def test_ctrl_z_stops_the_job_and_fg_continues_it(
    processes: Processes, strays: list[int]
) -> None:
    run = await start_as_a_job(processes, "run", "--", sys.executable, "-c", REPORTER)
    program = int((await line(run)).split()[1])
    strays.append(program)
    os.killpg(run.pid, signal.SIGTSTP)  # Ctrl-Z: the terminal signals the job's group
    for pid in (program, run.pid):
        await asyncio.to_thread(wait_for, partial(stopped, pid), f"{pid} to stop")
    os.killpg(run.pid, signal.SIGCONT)  # fg
    await asyncio.to_thread(wait_for, lambda: state_of(program) != "T", "the program to go on")
    run.send_signal(signal.SIGTERM)
    assert await line(run) == f"got {int(signal.SIGTERM)}"
    assert await asyncio.wait_for(run.wait(), 30) == 9


async def test_ctrl_c_at_the_terminal_reaches_the_program_once(
    processes: Processes, strays: list[int]
) -> None:
    # A shell runs the job in a process group of its own, and the terminal sends SIGINT to
    # that whole group: the program must get it once (through gpuguard), not twice.
    run = await start_as_a_job(processes, "run", "--", sys.executable, "-c", REPORTER)
    program = int((await line(run)).split()[1])
    strays.append(program)
    assert os.getpgid(program) != os.getpgid(run.pid), "the program shares the terminal's group"
    os.killpg(run.pid, signal.SIGINT)
    assert await line(run) == f"got {int(signal.SIGINT)}"
    assert await asyncio.wait_for(run.wait(), 30) == 9  # the program's code, not 130
    assert run.stdout is not None
    assert await run.stdout.read() == b""


async def test_a_cancelled_wait_kills_the_whole_tree_and_returns_once_it_is_gone(
    processes: Processes, release: Path
) -> None:
    runner = await processes.start(sys.executable, "-c", CANCELLED_WAIT, DOUBLE_FORK, str(release))
    said = dict(((await line(runner)).split(), (await line(runner)).split()))
    worker = int(said["worker"])  # setsid'd, out of the program's group, its parent gone
    assert not gone(worker)
    assert runner.stdin is not None
    runner.stdin.write(b"stop\n")
    assert await line(runner) == "cancelled"
    assert gone(worker), "the wait returned while a process of the tree still ran"
