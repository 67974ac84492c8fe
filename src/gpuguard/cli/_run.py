"""``gpuguard run -- CMD ARGS...``: any program (a training script, a tool) under the lease.

The program starts only once the GPU is granted, and the lease lasts as long as any process
of the program's tree lives (:mod:`gpuguard.cli._tree`): its background jobs, double-forked
workers and daemons included. On the host scope the tree itself holds the lease's kernel
lock (``GPUGUARD_LEASE_FD``), so that stays true even when gpuguard is SIGKILLed. Every
signal a terminal or a supervisor sends to stop, pause or tell a program something is
passed on to the program's whole process group; while the GPU is still awaited, the
stopping ones end the wait instead. The exit status is the
program's, as a shell reports it (128 + N for death by signal N).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from .._events import Priority
from .._exceptions import GpuGuardError
from ..guard import GpuGuard
from ..settings import load_settings
from ._output import errors, fail
from ._tree import ProgramTree, exit_status

__all__ = ["run", "run_under_lease", "waiting_notice"]

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
) -> int:
    """Hold the GPU, run ``argv``'s whole tree to its end, free the GPU; return its status.

    A program ended by signal N gives ``128 + N``, as shells report it. Raises the guard's
    errors (``WaitTimeout``, ``QueueFull``) when the GPU was not granted, and ``OSError``
    when the program cannot be started.
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
            tree = start_tree(argv, guard.lease_fd(lease))
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


def start_tree(argv: Sequence[str], lease_fd: int | None) -> ProgramTree:
    """Start ``argv``'s tree, handing it ``lease_fd`` (then closed here: the tree keeps it)."""
    try:
        return ProgramTree(argv, lease_fd=lease_fd)
    finally:
        if lease_fd is not None:
            os.close(lease_fd)


def run(
    command: Annotated[
        list[str], typer.Argument(metavar="-- CMD ARGS...", help="The program and its arguments.")
    ],
    priority: Annotated[
        str,
        typer.Option(metavar="PRIORITY", help="interactive, normal or background."),
    ] = "normal",
    operation: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="How others see it (default: the program's name)."),
    ] = None,
    wait_timeout: Annotated[
        float | None,
        typer.Option(min=0, metavar="S", help="Give up after waiting this long for the GPU."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", metavar="FILE", help="Settings file (.toml or .env)."),
    ] = None,
) -> None:
    """Run a program holding the GPU lease: gpuguard run [OPTIONS] -- CMD ARGS...

    It starts once the GPU is granted (behind the server's work and other programs), gets
    the signals gpuguard gets (to its whole process group), and frees the GPU when the last
    process it started has exited, however it exits. Exits with the program's status.
    """
    from ..settings import build_guard

    if priority.upper() not in Priority.__members__:
        raise fail(f"unknown priority {priority!r}: interactive, normal or background", 2)
    try:
        guard = build_guard(load_settings(config).guard)
        code = asyncio.run(
            run_under_lease(
                command,
                guard=guard,
                operation=operation or Path(command[0]).name,
                priority=Priority[priority.upper()],
                wait_timeout=wait_timeout,
                notify=lambda line: errors.print(line, markup=False, highlight=False),
            )
        )
    except GpuGuardError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot run {command[0]!r}: {exc}", 127) from exc
    raise typer.Exit(code)
