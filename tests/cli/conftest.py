"""A live server with indexing jobs, over the fake backend and hashing embedders."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from gpuguard import GpuSet
from gpuguard._server_file import remove_server_file, write_server_file
from gpuguard.devices import FakeDevices
from gpuguard.embed import BulkEmbedder, Embedder, EmbedderPair
from gpuguard.gateway import ModelGateway
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager
from gpuguard.server import ServerThread, create_app
from gpuguard.server._jobs import IndexingJobs
from gpuguard.settings import LlmSettings, Settings, SourceSettings, build_guards, load_settings
from gpuguard.testing import FakeBackend, HashEmbedder


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` served on a thread, its admin token left for this user's CLI; yields the URL.

    As ``gpuguard serve`` does: the CLI finds the token by itself, the tests pass none.
    """
    with ServerThread(app) as url, token_left_for_the_cli(app, url):
        yield url


@contextmanager
def token_left_for_the_cli(app: FastAPI, url: str) -> Iterator[None]:
    """The server file of ``app`` at ``url`` while the block runs."""
    port = int(url.rsplit(":", 1)[1])
    write_server_file(port, url, app.state.access.token)
    try:
        yield
    finally:
        remove_server_file(port)


@contextmanager
def indexing_server(
    folder: Path, *, gpu: Embedder | None = None, databases: Mapping[str, str] | None = None
) -> Iterator[ServerThread]:
    """A started server that may index under ``folder`` (and the named ``databases``)."""
    gateway = ModelGateway(FakeBackend(["fake-llm"]), model="fake-llm")
    named = {name: SecretStr(url) for name, url in (databases or {}).items()}
    sources = SourceSettings(document_roots=[folder], databases=named)
    with VectorStore(folder / "index.db") as store:
        jobs = IndexingJobs(
            JobManager(events=gateway.events),
            store=store,
            bulk=BulkEmbedder(EmbedderPair(gpu, HashEmbedder()), gateway.guard, batch_size=8),
            events=gateway.events,
            sources=sources,
        )
        settings = Settings(llm=LlmSettings(backend="fake"), sources=sources)
        app = create_app(settings, gateway=gateway, jobs=jobs)
        server = ServerThread(app)
        with server as url, token_left_for_the_cli(app, url):
            yield server


CHILD_DEADLINE_S = 120.0
"""How long a test waits for a child's line: a net against a wedged child, not a speed test."""


def read_line(pipe: IO[bytes], deadline_s: float = CHILD_DEADLINE_S) -> str:
    """The child's next line on ``pipe`` (opened unbuffered); fails rather than hangs."""
    descriptor = pipe.fileno()
    data = b""
    end = time.monotonic() + deadline_s
    while not data.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not select.select([descriptor], [], [], left)[0]:
            raise AssertionError(f"no whole line from the child; got {data!r}")
        piece = os.read(descriptor, 1)
        if not piece:
            break
        data += piece
    return data.decode()


GIB = 1024**3


@contextmanager
def two_gpu_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> Iterator[tuple[ServerThread, GpuSet]]:
    """A started server over GPU 0 (8 GiB, exclusive, lease ``name``) and GPU 1 (80 GiB,
    budget, 70 GiB free), its token left for this user's CLI; yields it and its GPUs."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("GPUGUARD_SERVER__TOKEN", raising=False)
    devices = FakeDevices.with_gpus(8 * 1024, 80 * 1024)
    devices.set_free(1, 70 * GIB)
    limits = load_settings(guard={"scope": "process", "name": name}).guard
    gpus = build_guards(limits, detect=lambda: devices)
    gateway = ModelGateway(
        FakeBackend(["fake-llm"]), model="fake-llm", gpus=gpus, cpu_embedder=HashEmbedder()
    )
    application = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    server = ServerThread(application)
    with server as url, token_left_for_the_cli(application, url):
        yield server, gpus
