"""The program ``gpuguard run`` starts, and every process it starts in turn: one tree.

* The program runs in a session and process group of its own, so a signal meant for it goes
  to the whole group (``bash -c 'prog; ...'`` passes SIGTERM to ``prog`` too), and a Ctrl-C
  at the terminal reaches it once, through gpuguard, not twice.
* gpuguard is the tree's *subreaper* (Linux): a descendant whose parent exits
  (``sh -c 'prog &'``, a double fork, a daemon that called ``setsid``) is handed to gpuguard,
  which reaps every process of the tree: :meth:`ProgramTree.wait` returns only when the last
  one has ended. Elsewhere it returns when the program itself has ended.
* The kernel kills the program when gpuguard dies, even by SIGKILL (``PR_SET_PDEATHSIG``).
* Where the lease is a kernel lock (host scope), the program inherits it: one descriptor,
  named in ``GPUGUARD_LEASE_FD``, which every process of the tree inherits in turn. The lock
  is held while any process keeps it open, so a descendant that outlives a SIGKILLed
  gpuguard (PDEATHSIG reaches only the program itself) still holds the GPU, and nobody is
  granted before it has ended. A process that closes it lets go of the GPU for its tree:
  that is the program's choice.
* The program sees the GPU whose lease it holds, and only that one: ``CUDA_VISIBLE_DEVICES``
  names its NVML index (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, the order in which CUDA's
  numbers are NVML's), unless the environment names the devices already: that is the
  user's choice, and the lease is only as true as it.

The tree is reaped by one thread blocked in ``waitpid(-1)``: this process starts no other
children while a tree runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from .._kernel import become_subreaper, die_with_parent

__all__ = ["DEVICES_VAR", "LEASE_FD_VAR", "ProgramTree", "exit_status"]

LEASE_FD_VAR = "GPUGUARD_LEASE_FD"
"""The environment variable that tells the program which descriptor keeps the lease."""
DEVICES_VAR = "CUDA_VISIBLE_DEVICES"
"""The environment variable that tells CUDA which GPUs the program may see."""


def exit_status(code: int) -> int:
    """A shell's exit status: the program's code, or 128 + N for death by signal N."""
    return code if code >= 0 else 128 - code


class ProgramTree:
    """One program and its descendants: start it, signal the tree, kill it, wait for its end.

    ``lease_fd``, if given, is passed on to the program (the same number, named in
    :data:`LEASE_FD_VAR`); the caller closes its own copy once the tree has started.
    ``gpu``, if given, is the NVML index of the GPU whose lease the tree holds: the only one
    the program sees, unless the environment names its devices (:data:`DEVICES_VAR`).
    """

    def __init__(
        self, argv: Sequence[str], *, lease_fd: int | None = None, gpu: int | None = None
    ) -> None:
        become_subreaper()
        loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[int] = loop.create_future()
        self._killing = False
        kept = () if lease_fd is None else (lease_fd,)
        self._program = subprocess.Popen(
            list(argv),
            start_new_session=True,
            # Between fork and exec: one prctl through the C library gpuguard already loaded.
            preexec_fn=partial(die_with_parent, os.getpid()),
            pass_fds=kept,
            env=_environment(lease_fd, gpu),
        )
        self.pid = self._program.pid
        """The program's process id, which is also its process group's."""
        threading.Thread(
            target=self._reap, args=(loop,), name="gpuguard-run-reaper", daemon=True
        ).start()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the program's process group (what is left of it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL every process of the tree, and each one handed to gpuguard from now on."""
        self._killing = True
        self._kill_all()

    async def wait(self) -> int:
        """The program's exit code once every process of the tree has ended (negative: signal).

        Cancelled, it kills the tree and returns only once the tree has ended (honest).
        """
        try:
            return await asyncio.shield(self._ended)
        except asyncio.CancelledError:
            self.kill()
            while not self._ended.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([self._ended])
            raise

    def _kill_all(self) -> None:
        self.signal(signal.SIGKILL)
        for pid in _children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _reap(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reap children until none is left; the program's own status is the tree's."""
        code = -signal.SIGKILL
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                self._program.returncode = code  # reaped here, not by Popen
            if self._killing:  # an orphan handed to us since the last kill: kill it too
                self._kill_all()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, self._ended, code)


def _environment(lease_fd: int | None, gpu: int | None) -> dict[str, str]:
    """The program's environment: gpuguard's, naming ``lease_fd`` and GPU ``gpu``.

    An outer run's descriptor is not passed on; devices the user named stay as named.
    """
    env = {name: value for name, value in os.environ.items() if name != LEASE_FD_VAR}
    if lease_fd is not None:
        env[LEASE_FD_VAR] = str(lease_fd)
    if gpu is not None and DEVICES_VAR not in env:
        # CUDA counts in NVML's order only by PCI bus; with one GPU visible, the order
        # changes nothing else for the program.
        env[DEVICES_VAR] = str(gpu)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def _settle(ended: asyncio.Future[int], code: int) -> None:
    if not ended.done():
        ended.set_result(code)


def _children() -> list[int]:
    """The children of gpuguard (orphans handed to it included), where /proc lists them."""
    pids: list[int] = []
    for listing in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            pids.extend(int(pid) for pid in listing.read_text().split())
    return pids
