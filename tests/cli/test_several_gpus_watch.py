"""``gpuguard status`` (and ``--watch``) with several GPUs: every GPU's holders, queue and
memory, not only the first GPU's lane; with one GPU the piped line is what it always was."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuguard import GpuSet, Lease, Priority
from gpuguard.cli import app
from gpuguard.cli._render import watch_line
from gpuguard.server import ServerThread

from .conftest import two_gpu_server

runner = CliRunner()
GIB = 1024**3


@dataclass
class Served:
    server: ServerThread
    gpus: GpuSet


@pytest.fixture
def two_gpus_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """GPU 0 (8 GiB, exclusive) and GPU 1 (80 GiB, budget, 70 GiB free) behind a server."""
    with two_gpu_server(tmp_path, monkeypatch, "watch0") as (server, gpus):
        yield Served(server, gpus)


async def _hold_and_queue(gpus: GpuSet) -> tuple[Lease, asyncio.Task[None]]:
    """On the server's loop: GPU 1 held by ``train``, ``index`` queued behind it."""
    lease = gpus[1].acquire_nowait("train", memory_bytes=60 * GIB)
    hold = gpus[1].hold("index", priority=Priority.BACKGROUND, memory_bytes=20 * GIB)
    assert await hold.reserve()  # queued: 20 GiB do not fit beside train

    async def run() -> None:
        async with hold:
            pass

    return lease, asyncio.create_task(run())


async def _release(lease: Lease, queued: asyncio.Task[None]) -> None:
    lease.release()
    await queued


def test_every_gpus_holder_queue_and_memory_show(two_gpus_served: Served) -> None:
    served = two_gpus_served
    lease, queued = served.server.call(_hold_and_queue(served.gpus))
    try:
        url = served.server.url
        result = runner.invoke(app, ["status", "--url", url, "--watch", "--count", "1"])
        assert result.exit_code == 0, result.output
        [line] = result.output.splitlines()
        assert re.fullmatch(
            r"\d\d:\d\d:\d\d watch0 holder free \| queue interactive: -; normal: -; "
            r"background: - \| gpu1 budget 84 GB free [\d.]+ GB holder train \(background, "
            r"[^|]*\) \| queue interactive: -; normal: -; background: #1 index[^|]* \| "
            r"jobs none",
            line,
        ), line
        result = runner.invoke(app, ["status", "--url", url])
        assert result.exit_code == 0, result.output
        gpu1 = " ".join(result.output.split("\ngpu1 ", 1)[1].split())  # wrapped at 80 columns
        assert gpu1.startswith("budget budget 84 GB free")
        assert "holders train (background," in gpu1
        assert "waiting #1 index" in gpu1
    finally:
        served.server.call(_release(lease, queued))


def _two(second_holders: list[dict[str, Any]]) -> dict[str, Any]:
    """A state of two exclusive GPUs, GPU 0 free, GPU 1 held by ``second_holders``."""
    free: dict[str, Any] = {"holders": [], "waiters": [], "policy": "exclusive"}
    gpus = [{"gpu": "gpu0", **free}, {**free, "gpu": "gpu1", "holders": second_holders}]
    return {"gpu": free, "gpus": gpus, "jobs": []}


def test_a_change_on_the_second_gpu_alone_prints_a_new_line() -> None:
    train = {"operation": "train", "priority": "background", "held_s": 1.0}
    before, after = _two([]), _two([train])
    assert watch_line(before)[0] != watch_line(after)[0]
    later = _two([{**train, "held_s": 9.0}])
    assert watch_line(after)[0] == watch_line(later)[0]  # a held time alone is no change
    assert watch_line(later)[1] == (
        "gpu0 holder free | queue interactive: -; normal: -; background: - | "
        "gpu1 holder train (background, 9.0 s) | queue interactive: -; normal: -; "
        "background: - | jobs none"
    )


def test_one_gpu_keeps_its_line() -> None:
    snapshot: dict[str, Any] = {"guard": "gpu0", "holder": None, "waiters": []}
    state = {"gpu": snapshot, "gpus": [{"gpu": "gpu0", **snapshot}], "jobs": []}
    assert watch_line(state)[1] == (
        "holder free | queue interactive: -; normal: -; background: - | jobs none"
    )
