"""``gpuguard ps`` and ``gpuguard status`` with several GPUs: a line per GPU (policy, budget,
free, holders); with one GPU their output is what it always was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuguard import GpuSet
from gpuguard.cli import app
from gpuguard.cli._render import gpu_lines

from .conftest import two_gpu_server

runner = CliRunner()
GIB = 1024**3


@pytest.fixture
def two_gpu_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, GpuSet]]:
    with two_gpu_server(tmp_path, monkeypatch, "cli0") as (server, gpus):
        yield server.url, gpus


def test_ps_and_status_show_a_line_per_gpu(two_gpu_served: tuple[str, GpuSet]) -> None:
    url, gpus = two_gpu_served
    lease = gpus[1].acquire_nowait("train")
    try:
        result = runner.invoke(app, ["ps", "--url", url])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert "cli0  exclusive  holders free" in lines
        assert any(
            line.startswith("gpu1  budget  budget 84 GB  free 75 GB  holders train (background,")
            for line in lines
        ), result.output
        result = runner.invoke(app, ["status", "--url", url])
        assert result.exit_code == 0, result.output
        assert "cli0  exclusive  holders free" in result.output
        assert "gpu1  budget  budget 84 GB  free 75 GB  holders train" in result.output
        result = runner.invoke(app, ["ps", "--url", url, "--json"])
        assert [gpu["gpu"] for gpu in json.loads(result.output)["gpus"]] == ["cli0", "gpu1"]
    finally:
        lease.release()


def test_one_gpu_adds_no_line() -> None:
    snapshot = {"gpu": "gpu0", "guard": "gpu0", "policy": "exclusive", "holders": []}
    assert gpu_lines([snapshot]) == []
    assert gpu_lines([]) == []
