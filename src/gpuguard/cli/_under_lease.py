"""Running a program's whole process tree under the GPU lease, signals passed on.

The program starts only once the GPU is granted, and the lease lasts as long as any process
of the program's tree lives (:mod:`gpuguard.cli._tree`). The ``gpuguard run`` command
(:mod:`gpuguard.cli._run`) imports this module when it runs, so that the CLI's other
commands never import asyncio for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .._events import Priority
from ._tree import ProgramTree, exit_status

if TYPE_CHECKING:
    from ..guard import GpuGuard

__all__ = ["FORWARDED_SIGNALS", "run_under_lease", "start_tree", "waiting_notice"]

ENDING_SIGNALS = tuple(
    signal.Signals[name]
    for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM")
    if hasattr(signal, name)
)
"""Passed on to the program; before it starts, they end the wait (their default action)."""
PASSED_SIGNALS = tuple(
    signal.Signals[name] for name in ("SIGWINCH", "SIGCONT") if hasattr(signal, name)
)
"""Passed on to the program; before it starts, nothing to do."""
PAUSING_SIGNALS = tuple(signal.Signals[name] for name in ("SIGTSTP",) if hasattr(signal, name))
"""Stop the program (as SIGSTOP), then gpuguard stops too, so the shell sees the job stopped."""
FORWARDED_SIGNALS = ENDING_SIGNALS + PASSED_SIGNALS + PAUSING_SIGNALS


def waiting_notice(guard: GpuGuard) -> str:
    """``Waiting for GPU... (held by X, pid N)``, naming the holder in whichever process."""
    current = guard.current
    if current is None:
        return "Waiting for GPU..."
    hung = "" if current.hung_s is None else f" (hung for {current.hung_s:.0f}s)"
    where = "" if current.pid is None else f", {current.where}"
    return f"Waiting for GPU... (held by {current.operation}{hung}{where})"


async def run_under_lease(
    argv: Sequence[str],
    *,
    guard: GpuGuard,
    operation: str,
    priority: Priority,
    wait_timeout: float | None,
    notify: Callable[[str], None],
    gpu: int,
) -> int:
    """Hold the GPU, run ``argv``'s whole tree to its end, free the GPU; return its status.

    ``gpu`` is the NVML index of ``guard``'s GPU, the one the program is shown
    (:class:`ProgramTree`). A program ended by signal N gives ``128 + N``, as shells report
    it. Raises the guard's errors (``WaitTimeout``, ``QueueFull``) when the GPU was not
    granted, and ``OSError`` when the program cannot be started.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    tree: ProgramTree | None = None
    interrupted_by: int | None = None

    def on_signal(signum: int) -> None:
        nonlocal interrupted_by
        if signum in PAUSING_SIGNALS:
            if tree is not None:
                # The program's group has no parent in its session (an orphaned group): the
                # kernel drops a SIGTSTP sent to it, so it is stopped with SIGSTOP instead.
                tree.signal(signal.SIGSTOP)
            os.kill(os.getpid(), signal.SIGSTOP)
        elif tree is not None:
            tree.signal(signum)
        elif signum in ENDING_SIGNALS:
            interrupted_by = signum
            task.cancel(f"signal {signum} while waiting for the GPU")

    for signum in FORWARDED_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        hold = guard.hold(
            operation, priority=priority, wait_timeout=wait_timeout, hold_timeout=None
        )
        waited = await hold.reserve()
        if waited:
            notify(waiting_notice(guard))
        async with hold as lease:
            if waited:
                notify(f"got the GPU after {lease.waited_s:.1f} s")
            tree = start_tree(argv, guard.lease_fd(lease), gpu)
            code = await lease.run(tree.wait(), stop=tree.kill)
    except asyncio.CancelledError:
        if interrupted_by is None or tree is not None:
            raise
        task.uncancel()
        return 128 + interrupted_by
    finally:
        for signum in FORWARDED_SIGNALS:
            loop.remove_signal_handler(signum)
    return exit_status(code)


def start_tree(argv: Sequence[str], lease_fd: int | None, gpu: int) -> ProgramTree:
    """Start ``argv``'s tree on GPU ``gpu``, handing it ``lease_fd``.

    The descriptor is closed here once handed on: the tree keeps it.
    """
    try:
        return ProgramTree(argv, lease_fd=lease_fd, gpu=gpu)
    finally:
        if lease_fd is not None:
            os.close(lease_fd)
