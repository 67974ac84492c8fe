"""Indexing jobs from the CLI: the id at once, Ctrl-C cancels, --detach, ``gpuguard jobs``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gpuguard._server_file import read_server_token
from gpuguard.cli import app
from gpuguard.cli._samples import write_sample_documents
from gpuguard.embed import Vectors
from gpuguard.testing import HashEmbedder

from .conftest import CHILD_DEADLINE_S, indexing_server, read_line

runner = CliRunner()


class GatedEmbedder(HashEmbedder):
    """A "GPU" embedder whose batches wait for ``gate``: a job that runs until told."""

    def __init__(self) -> None:
        super().__init__(device="cuda")
        self.gate = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        await self.gate.wait()
        return await super().embed(texts)


@dataclass
class Served:
    url: str
    documents: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    gpu = GatedEmbedder()
    documents = write_sample_documents(tmp_path / "documents")
    with indexing_server(tmp_path, gpu=gpu) as server:
        server.call(gpu.load())
        try:
            yield Served(server.url, documents)
        finally:
            server.call(_open(gpu.gate))


async def _open(gate: asyncio.Event) -> None:
    gate.set()


def _job(url: str, job_id: str) -> dict[str, object]:
    admin = {"Authorization": f"Bearer {read_server_token(url)}"}  # as the CLI finds it
    answer: dict[str, object] = httpx.get(f"{url}/admin/jobs/{job_id}", headers=admin).json()
    return answer


def test_ctrl_c_cancels_the_job_on_the_server(served: Served) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            *("-c", "from gpuguard.cli import main; main()"),
            *("index", "docs", str(served.documents), "--url", served.url),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=os.environ,
    )
    try:
        assert child.stderr is not None
        first = read_line(child.stderr)  # printed as soon as the server took the job
        job_id = first.split()[1]
        assert f"gpuguard jobs cancel {job_id}" in first, first
        assert _job(served.url, job_id)["status"] in ("queued", "running")
        child.send_signal(signal.SIGINT)
        _, rest = child.communicate(timeout=CHILD_DEADLINE_S)
    finally:
        child.kill()
    assert child.returncode == 130, rest
    assert f"job {job_id} cancelled on the server" in rest.decode()
    assert _job(served.url, job_id)["status"] == "cancelled"


def test_detach_list_show_and_cancel(served: Served) -> None:
    result = runner.invoke(
        app, ["index", "docs", str(served.documents), "--url", served.url, "--detach", "--json"]
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    job_id = job["id"]
    assert f"rag-indexing {job_id}" in result.stderr

    listed = runner.invoke(app, ["jobs", "list", "--url", served.url])
    assert listed.exit_code == 0
    assert job_id in listed.stdout
    assert "rag-indexing running" in listed.stdout

    shown = runner.invoke(app, ["jobs", "show", job_id, "--url", served.url, "--json"])
    assert json.loads(shown.stdout)["status"] == "running"

    cancelled = runner.invoke(app, ["jobs", "cancel", job_id, "--url", served.url])
    assert cancelled.exit_code == 0
    assert f"rag-indexing {job_id}" in cancelled.stdout
    assert "cancelled" in cancelled.stdout
    assert _job(served.url, job_id)["status"] == "cancelled"


def test_an_unknown_job_is_a_clear_error(served: Served) -> None:
    result = runner.invoke(app, ["jobs", "show", "nope", "--url", served.url])
    assert result.exit_code == 1
    assert "404" in result.output
