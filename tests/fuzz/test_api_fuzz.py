"""Property-based fuzz of every route in /openapi.json against a live server on 127.0.0.1.

schemathesis generates valid and invalid requests from the OpenAPI description; every answer
must be a non-5xx that matches the description. The server runs the real app over fast
fakes; the job routes run over a runner that records instead of indexing, so that fuzzed
paths and database URLs never reach a disk or a network (the security suite tries real ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    CheckFunction,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    status_code_conformance,
)
from schemathesis.openapi import from_dict

from gpuguard import GpuGuard, JobNotFound
from gpuguard.gateway import ModelGateway
from gpuguard.server import ServerThread, create_app
from gpuguard.settings import LlmSettings, Settings
from gpuguard.testing import FakeBackend, HashEmbedder

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

# Known gaps in other routes' descriptions, each left unchecked on its routes until the
# description tells the truth (every other check, no 5xx first, runs on them too).
OPENAI_404 = [status_code_conformance]  # the 404 for an unknown model is not described
# The same on the Ollama API, where an empty model name is also valid by the description
# but refused (400).
OLLAMA_EMPTY_NAME = [status_code_conformance, positive_data_acceptance]
# ... and model management answers 501 when the backend is not Ollama (checked below).
OLLAMA_MANAGEMENT = [*OLLAMA_EMPTY_NAME, not_a_server_error]
# Some requests valid by the description are refused (400).
OPENAI_REFUSED_VALID = [*OPENAI_404, positive_data_acceptance]
KNOWN_GAPS: dict[str, list[CheckFunction]] = {
    "/v1/chat/completions": OPENAI_REFUSED_VALID,
    "/v1/completions": OPENAI_REFUSED_VALID,
    "/v1/embeddings": OPENAI_REFUSED_VALID,
    "/api/chat": OLLAMA_EMPTY_NAME,
    "/api/generate": OLLAMA_EMPTY_NAME,
    "/api/embed": OLLAMA_EMPTY_NAME,
    "/api/embeddings": OLLAMA_EMPTY_NAME,
    "/api/show": OLLAMA_EMPTY_NAME,
    "/api/pull": OLLAMA_MANAGEMENT,
    "/api/create": OLLAMA_MANAGEMENT,
    "/api/delete": OLLAMA_MANAGEMENT,
    "/api/copy": OLLAMA_MANAGEMENT,
}


def invalid_data_refused(ctx: Any, response: Any, case: Any) -> None:
    """``negative_data_rejection`` that also counts a 413 (body over the limit) as refused."""
    if response.status_code != 413:
        negative_data_rejection(ctx, response, case)


def no_5xx_but_not_implemented(ctx: Any, response: Any, case: Any) -> None:
    """``not_a_server_error`` for routes that answer 501 on purpose: any other 5xx fails."""
    assert response.status_code == 501 or response.status_code < 500, (
        f"{case.operation.label} answered {response.status_code}"
    )


@dataclass(frozen=True)
class RecordedJob:
    """A job that was asked for and never run."""

    id: str
    kind: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": "succeeded", "detail": self.source}


class RecordingJobs:
    """A job runner that records what it is asked to start (bounded) and starts nothing."""

    def __init__(self) -> None:
        self.jobs: dict[str, RecordedJob] = {}

    def _record(self, kind: str, source: str) -> RecordedJob:
        job = RecordedJob(f"job-{len(self.jobs) % 100}", kind, source)
        self.jobs[job.id] = job
        return job

    async def start_schema_refresh(
        self, database_url: str, *, schemas: Sequence[str] | None = None, caller: str = ""
    ) -> RecordedJob:
        return self._record("schema-refresh", database_url)

    async def start_rag(self, path: Path, *, caller: str = "") -> RecordedJob:
        return self._record("rag-indexing", str(path))

    def list(self) -> Sequence[RecordedJob]:
        return list(self.jobs.values())

    def get(self, job_id: str) -> RecordedJob:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFound(f"no job {job_id!r}") from None

    async def cancel(self, job_id: str) -> RecordedJob:
        return self.get(job_id)


async def retrieve(question: str) -> list[str]:
    return [f"a passage about {question[:20]}"]


GATEWAY = ModelGateway(
    FakeBackend(["fake-llm", "other-llm"]),
    model="fake-llm",
    guard=GpuGuard(max_waiters=64, wait_timeout=10),
    gpu_embedder=HashEmbedder(name="hash-embedder", device="cuda"),
    cpu_embedder=HashEmbedder(name="hash-embedder"),
)
APP = create_app(
    Settings(llm=LlmSettings(backend="fake")),
    gateway=GATEWAY,
    retriever=retrieve,
    jobs=RecordingJobs(),
)
# The fuzzer is the server's admin: every route is reachable (the token's own tests are in
# tests/security).
ADMIN = {"Authorization": f"Bearer {APP.state.access.token}"}
# /events streams until the client leaves: a request/response fuzzer would wait forever.
schema = from_dict(APP.openapi()).exclude(path="/events")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ServerThread(APP)
    with server as url:
        server.call(GATEWAY.prewarm())  # ready, as a started server is: /ready answers 200
        yield url
        server.call(GATEWAY.aclose())


def test_the_fuzzed_description_is_the_served_one(base_url: str) -> None:
    assert httpx.get(f"{base_url}/openapi.json", headers=ADMIN).json() == APP.openapi()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_every_route_answers_without_a_5xx_and_as_described(base_url: str, case: Any) -> None:
    excluded = [negative_data_rejection, *KNOWN_GAPS.get(case.operation.path, [])]
    additional: list[CheckFunction] = [invalid_data_refused]
    if not_a_server_error in excluded:
        additional.append(no_5xx_but_not_implemented)
    case.call_and_validate(
        base_url=base_url,
        headers=ADMIN,
        timeout=10,
        excluded_checks=excluded,
        additional_checks=additional,
    )
