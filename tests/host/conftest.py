"""Real processes sharing one host-scope lease: start them, read their lines, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPUGUARD = Path(sys.executable).with_name("gpuguard")
READY_TIMEOUT_S = 30.0
"""Bound on a subprocess's start-up (imports on a loaded 2-core machine), not a race."""


def child_env(**extra: str) -> dict[str, str]:
    """This environment with the sources under test first on the path."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


class Processes:
    """Subprocesses started by one test; whatever is still running at the end is killed."""

    def __init__(self) -> None:
        self.started: list[asyncio.subprocess.Process] = []

    async def start(self, *argv: str, **env: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=child_env(**env),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own group: children it forks are ended with it
        )
        self.started.append(process)
        return process

    async def gpuguard(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        """The ``gpuguard`` command (the script installed beside this Python)."""
        return await self.start(str(GPUGUARD), *args, **env)

    async def worker(self, *args: str) -> asyncio.subprocess.Process:
        """``python -m tests.host._worker ARGS``."""
        return await self.start(sys.executable, "-m", "tests.host._worker", *args)

    async def fault(self, *args: str) -> asyncio.subprocess.Process:
        """``python -m tests.host._fault_worker ARGS``."""
        return await self.start(sys.executable, "-m", "tests.host._fault_worker", *args)

    async def chain(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        """``python -m tests.host._chain_worker ARGS`` (``env`` added to its environment)."""
        return await self.start(sys.executable, "-m", "tests.host._chain_worker", *args, **env)

    async def kill_all(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            # Read the pipes to their end so the transports close inside this event loop.
            await process.communicate()


async def line(
    process: asyncio.subprocess.Process, timeout: float = READY_TIMEOUT_S, *, stderr: bool = False
) -> str:
    """The next line ``process`` prints (bounded: fail instead of hanging the suite)."""
    stream = process.stderr if stderr else process.stdout
    assert stream is not None
    raw = await asyncio.wait_for(stream.readline(), timeout)
    if not raw:
        assert process.stderr is not None
        error = (await process.stderr.read()).decode()
        raise AssertionError(f"process {process.pid} ended early: {error}")
    return raw.decode().strip()


async def finish(process: asyncio.subprocess.Process) -> int:
    """Close its stdin (the workers' cue to let go) and wait for its exit status."""
    assert process.stdin is not None
    process.stdin.close()
    return await asyncio.wait_for(process.wait(), READY_TIMEOUT_S)


def entries(lock_dir: Path, gpu: str = "gpu0") -> Sequence[str]:
    """The request files left in ``lock_dir``."""
    folder = lock_dir / gpu / "entries"
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.fixture
async def processes() -> AsyncIterator[Processes]:
    running = Processes()
    try:
        yield running
    finally:
        await running.kill_all()
