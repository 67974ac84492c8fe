"""``gpuguard run``: the program's tree itself keeps the host lease, even once gpuguard is dead.

Real processes and an external ledger of ``CLOCK_MONOTONIC`` stamps: a grandchild of the
program goes on "using the GPU" after gpuguard is SIGKILLed, and the next process is granted
only once the grandchild has left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from gpuguard import GpuGuard

from .._processes import gone, wait_for
from .conftest import Processes, line

# Stamps ``NAME enter NS`` in the ledger argv[1], says ``NAME PID``, runs until the file
# argv[3] exists, stamps ``NAME leave NS``. One O_APPEND write per stamp.
STAMPED = """
import os, pathlib, sys, time
ledger, name, release = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
fd = os.open(ledger, os.O_WRONLY | os.O_APPEND)
os.write(fd, f"{name} enter {time.monotonic_ns()}\\n".encode())
os.write(1, f"{name} {os.getpid()}\\n".encode())
while not release.exists():
    time.sleep(0.01)
os.write(fd, f"{name} leave {time.monotonic_ns()}\\n".encode())
"""

# The program: a shell that says who it is, starts the stamped worker in the background and
# waits for it (``sh -c 'worker & wait'``).
SHELL = 'echo sh $$; "$0" -c "$1" "$2" "$3" "$4" & wait'


def host_guard() -> GpuGuard:
    return GpuGuard.host(lock_dir=os.environ["GPUGUARD_GUARD__LOCK_DIR"])


def intervals(ledger: Path) -> dict[str, tuple[int, int]]:
    """Each name's (enter, leave) stamps from the ledger."""
    stamps: dict[str, dict[str, int]] = {}
    for record in ledger.read_text().splitlines():
        name, what, ns = record.split()
        stamps.setdefault(name, {})[what] = int(ns)
    return {name: (s["enter"], s["leave"]) for name, s in stamps.items()}


async def test_a_grandchild_keeps_the_lease_after_gpuguard_is_killed(
    processes: Processes, tmp_path: Path
) -> None:
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    ledger.touch()
    try:
        first = await processes.gpuguard(
            "run", "--", "sh", "-c", SHELL, sys.executable, STAMPED, str(ledger), "worker",
            str(release),
        )  # fmt: skip
        shell = int((await line(first)).split()[1])
        worker = int((await line(first)).split()[1])
        os.kill(first.pid, signal.SIGKILL)  # its pipes stay open: the worker has them
        await asyncio.to_thread(wait_for, lambda: gone(first.pid), "gpuguard to die")
        await asyncio.to_thread(wait_for, lambda: gone(shell), "the shell to die with gpuguard")
        assert not gone(worker)

        current = host_guard().current
        assert current is not None, "the lease died with gpuguard"
        assert current.pid == first.pid
        assert current.owner_gone
        assert current.label == f"sh (pid {first.pid} gone; its programs still hold the GPU)"

        second = await processes.gpuguard(
            "run", "--", sys.executable, "-c", STAMPED, str(ledger), "second", str(release)
        )
        assert await line(second, stderr=True) == (
            f"Waiting for GPU... (held by sh, pid {first.pid} gone; "
            "its programs still hold the GPU)"
        )
    finally:
        release.touch()
    assert (await line(second)).startswith("second ")
    assert await asyncio.wait_for(second.wait(), 30) == 0
    assert gone(worker)
    spans = intervals(ledger)
    assert spans["worker"][1] < spans["second"][0], f"two holders at once: {spans}"
    assert host_guard().current is None


async def test_the_program_is_told_which_descriptor_keeps_the_lease(
    processes: Processes,
) -> None:
    check = (
        "import fcntl, os\n"
        "fd = int(os.environ['GPUGUARD_LEASE_FD'])\n"
        "try:\n"
        "    fcntl.flock(os.open(f'/proc/self/fd/{fd}', os.O_RDONLY), "
        "fcntl.LOCK_SH | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n"
        "    print('locked')\n"
    )
    run = await processes.gpuguard("run", "--", sys.executable, "-c", check)
    assert await line(run) == "locked"
    assert await asyncio.wait_for(run.wait(), 30) == 0
    assert host_guard().current is None
