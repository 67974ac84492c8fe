"""``gpuguard run -- CMD ARGS...``: any program (a training script, a tool) under the lease.

The program starts only once the GPU is granted and holds it until it exits, however it exits.
With the host scope the lease lives in this process's locks, so it also ends when this process
dies. SIGINT and SIGTERM go to the program while it runs; while waiting they end the wait.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["run", "run_under_lease", "waiting_notice"]

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def waiting_notice(guard: GpuGuard) -> str:
    """``Waiting for GPU... (held by X, pid N)``, naming the holder in whichever process."""
    current = guard.current
    if current is None:
        return "Waiting for GPU..."
    hung = "" if current.hung_s is None else f" (hung for {current.hung_s:.0f}s)"
    where = "" if current.pid is None else f", pid {current.pid}"
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
    """Hold the GPU, run ``argv`` to its end, free the GPU; return the program's exit status.

    A program ended by signal N gives ``128 + N``, as shells report it. Raises the guard's
    errors (``WaitTimeout``, ``QueueFull``) when the GPU was not granted, and ``OSError``
    when the program cannot be started.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    process: asyncio.subprocess.Process | None = None
    interrupted_by: int | None = None

    def on_signal(signum: int) -> None:
        nonlocal interrupted_by
        if process is None:
            interrupted_by = signum
            task.cancel(f"signal {signum} while waiting for the GPU")
        elif process.returncode is None:
            process.send_signal(signum)

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
            process = await asyncio.create_subprocess_exec(*argv)
            code = await lease.run(process.wait(), stop=process.kill)
    except asyncio.CancelledError:
        if interrupted_by is None or process is not None:
            raise
        task.uncancel()
        return 128 + interrupted_by
    finally:
        for signum in FORWARDED_SIGNALS:
            loop.remove_signal_handler(signum)
    return code if code >= 0 else 128 - code


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
    SIGINT and SIGTERM forwarded, and frees the GPU when it exits, however it exits. Exits
    with the program's status.
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
