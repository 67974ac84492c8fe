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

from pathlib import Path
from typing import Annotated

import typer

from .._exceptions import GpuGuardError
from ._output import errors, fail

__all__ = ["run"]


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
    import asyncio

    from .._events import Priority
    from ..settings import build_guard, load_settings
    from ._under_lease import run_under_lease

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
