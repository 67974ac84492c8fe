"""The real ``llama-server`` binary, built from the llama.cpp that llama-cpp-python vendors.

``scripts/install.sh`` builds it once beside the wheel cache
(``$WHEELS/../llama-server-<version>/llama-server``); ``GPUGUARD_LLAMA_SERVER`` names
another. Without it a test is skipped, and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

LLAMA_CPP_VERSION = "0.3.36"


def llama_server_binary() -> Path:
    """The binary, or a skip (a failure under ``CI=true``) saying how to build it."""
    named = os.environ.get("GPUGUARD_LLAMA_SERVER")
    wheels = Path(os.environ.get("WHEELS", Path.home() / ".cache/gpuguard/wheels"))
    binary = (
        Path(named)
        if named
        else wheels.parent / f"llama-server-{LLAMA_CPP_VERSION}" / "llama-server"
    )
    if not binary.is_file():
        why = f"no llama-server at {binary}: run scripts/install.sh (it builds it once)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


@asynccontextmanager
async def llama_server(*arguments: str | Path, log: Path) -> AsyncIterator[str]:
    """Run ``llama-server`` on a free loopback port until the block ends; yields its URL.

    Ready once ``GET /health`` answers at all (a single-model server says 503 while it
    loads, which is what the backend's load waits through).
    """
    port = _free_port()
    argv: Sequence[str | Path] = (
        llama_server_binary(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *arguments,
    )
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=output, stderr=asyncio.subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:
            for _ in range(600):
                if process.returncode is not None:
                    raise RuntimeError(f"llama-server exited: {_tail(log)}")
                try:
                    await http.get("/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)  # the process is starting: poll its socket
            else:
                raise RuntimeError(f"llama-server never answered: {_tail(log)}")
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
