"""``gpuguard run -- CMD ARGS...``: any program (a training script, a tool) under the lease.

The program starts only once the GPU is granted, and the lease lasts as long as any process
of the program's tree lives (:mod:`gpuguard.cli._tree`): its background jobs, double-forked
workers and daemons included. On the host scope the tree itself holds the lease's kernel
lock (``GPUGUARD_LEASE_FD``), so that stays true even when gpuguard is SIGKILLed. Every
signal a terminal or a supervisor sends to stop, pause or tell a program something is
passed on to the program's whole process group; while the GPU is still awaited, the
stopping ones end the wait instead. The exit status is the
program's, as a shell reports it (128 + N for death by signal N).

``--gpu K`` takes GPU K's lease (one of ``[guard] gpus``; default: the first of them, GPU 0
with ``auto``), the lease the server takes for its work on that GPU, so a program on one GPU
never waits for another's work; the program sees that GPU only (``CUDA_VISIBLE_DEVICES``),
unless the user named the devices in its environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._exceptions import GpuGuardError
from ._output import errors, fail

if TYPE_CHECKING:
    from ..settings import GuardSettings

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
    gpu: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="K",
            help="The GPU (NVML index, one of [guard] gpus) whose lease to hold and which "
            "the program sees (default: the first of [guard] gpus, GPU 0 with auto).",
        ),
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
        limits = load_settings(config).guard
        index = _chosen_gpu(limits, gpu)
        guard = build_guard(limits, index=index)
        code = asyncio.run(
            run_under_lease(
                command,
                guard=guard,
                operation=operation or Path(command[0]).name,
                priority=Priority[priority.upper()],
                wait_timeout=wait_timeout,
                notify=lambda line: errors.print(line, markup=False, highlight=False),
                gpu=index,
            )
        )
    except GpuGuardError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot run {command[0]!r}: {exc}", 127) from exc
    raise typer.Exit(code)


def _chosen_gpu(limits: GuardSettings, gpu: int | None) -> int:
    """GPU ``gpu`` if ``[guard] gpus`` has it (else exit 2, naming them), or the first of them.

    ``auto`` always has GPU 0, so the driver is asked only when another GPU is named.
    """
    from ..settings import gpu_indices

    if gpu is None:
        return 0 if limits.gpus == "auto" else limits.gpus[0]
    indices = [0] if limits.gpus == "auto" and gpu == 0 else gpu_indices(limits)
    if gpu not in indices:
        listed = ", ".join(str(index) for index in indices)
        raise fail(
            f"GPU {gpu} is not one of the GPUs gpuguard leases here ({listed}); see [guard] gpus", 2
        )
    return gpu
