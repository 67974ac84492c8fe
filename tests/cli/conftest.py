"""A live server with indexing jobs, over the fake backend and hashing embedders."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pydantic import SecretStr

from gpuguard.embed import BulkEmbedder, Embedder, EmbedderPair
from gpuguard.gateway import ModelGateway
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager
from gpuguard.server import ServerThread, create_app
from gpuguard.server._jobs import IndexingJobs
from gpuguard.settings import LlmSettings, Settings, SourceSettings
from gpuguard.testing import FakeBackend, HashEmbedder


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
        server = ServerThread(create_app(settings, gateway=gateway, jobs=jobs))
        with server:
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
