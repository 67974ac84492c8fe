"""Jobs over HTTP: bad sources, the start-up scenario, and a chat while indexing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuguard import GpuEvent, GpuStatus
from gpuguard.cli._demo import judge
from gpuguard.cli._samples import write_sample_database, write_sample_documents
from gpuguard.embed import BulkEmbedder, EmbedderPair, Vectors
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager
from gpuguard.server._jobs import IndexingJobs
from gpuguard.settings import SourceSettings
from gpuguard.testing import FakeBackend, HashEmbedder

from .conftest import EMBEDDER, MODEL, Live, LiveFactory


class GatedEmbedder(HashEmbedder):
    """A "GPU" embedder whose batches wait for ``gate``; ``busy`` is set while one waits."""

    def __init__(self) -> None:
        super().__init__(name=EMBEDDER, device="cuda")
        self.gate = asyncio.Event()
        self.busy = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.busy.set()
        await self.gate.wait()
        return await super().embed(texts)


class GatedBackend(FakeBackend):
    """Loads block until ``gate`` opens (a long prewarm)."""

    def __init__(self) -> None:
        super().__init__([MODEL])
        self.gate = asyncio.Event()

    async def load(self, model: str) -> None:
        await self.gate.wait()
        await super().load(model)


@dataclass
class Indexing:
    live: Live
    jobs: IndexingJobs
    database_url: str
    documents: Path


@pytest.fixture
async def indexing(tmp_path: Path, make_live: LiveFactory) -> AsyncIterator[Indexing]:
    async with make_live(backend=GatedBackend()) as live:
        gateway = live.gateway
        gpu = GatedEmbedder()
        await gpu.load()  # loaded up front, as the demo does: no "embed-load" lease
        gateway.gpu_embedder = gpu
        assert gateway.cpu_embedder is not None
        bulk = BulkEmbedder(EmbedderPair(gpu, gateway.cpu_embedder), gateway.guard, batch_size=8)
        with VectorStore(tmp_path / "index.db") as store:
            manager = JobManager(events=gateway.events)
            jobs = IndexingJobs(
                manager,
                store=store,
                bulk=bulk,
                events=gateway.events,
                sources=SourceSettings(document_roots=[tmp_path]),
            )
            live.app_context().jobs = jobs
            yield Indexing(
                live,
                jobs,
                write_sample_database(tmp_path / "shop.sqlite"),
                write_sample_documents(tmp_path / "docs"),
            )
            await manager.aclose()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "not a valid database URL"),
        ("nosuchdb://host/db", "unsupported database URL scheme"),
        ("sqlite:///{root}/no/such/file.db", "no SQLite database file"),
    ],
)
async def test_bad_database_url_is_a_clear_400(indexing: Indexing, url: str, fragment: str) -> None:
    root = indexing.documents.parent
    response = await indexing.live.http.post(
        "/admin/jobs/schema-refresh", json={"database_url": url.format(root=root)}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "source_unavailable"
    assert fragment in error["message"]


async def test_schemas_narrow_a_refresh_and_the_job_names_them(indexing: Indexing) -> None:
    http = indexing.live.http
    indexing.live.gateway.gpu_embedder.gate.set()  # type: ignore[union-attr]
    body = {"database_url": indexing.database_url, "schemas": ["main"]}
    started = await http.post("/admin/jobs/schema-refresh", json=body)
    assert started.status_code == 202
    await indexing.jobs.manager.wait(started.json()["id"])
    job = (await http.get(f"/admin/jobs/{started.json()['id']}")).json()
    assert job["status"] == "completed"
    assert job["result"]["schemas"] == ["main"]
    assert len(job["result"]["embedded_sources"]) == job["result"]["embedded"]
    empty = await http.post(
        "/admin/jobs/schema-refresh", json={"database_url": "sqlite://", "schemas": [""]}
    )
    assert empty.status_code == 400


async def test_missing_folder_and_unknown_job(indexing: Indexing) -> None:
    http = indexing.live.http
    missing = await http.post("/admin/jobs/rag", json={"path": "/no/such/folder"})
    assert missing.status_code == 400
    unknown = await http.get("/admin/jobs/nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "job_not_found"
    assert (await http.post("/admin/jobs/nope/cancel")).status_code == 404


async def test_start_up_scenario_prewarm_then_at_once_schema_refresh(indexing: Indexing) -> None:
    """Start (prewarm) and at once refresh the schemas: no overlap; batches fall back."""
    live = indexing.live
    backend = live.backend
    assert isinstance(backend, GatedBackend)
    gpu = live.gateway.gpu_embedder
    assert isinstance(gpu, GatedEmbedder)
    gpu.gate.set()
    with live.guard.events.subscribe(kinds={"gpu"}) as recorder:
        prewarm = asyncio.create_task(live.http.post("/admin/models/prewarm", json={}))
        async for event in recorder:  # the prewarm holds the GPU
            if isinstance(event, GpuEvent) and event.status is GpuStatus.STARTED:
                assert event.operation == "prewarm"
                break
        refresh = await live.http.post(
            "/admin/jobs/schema-refresh", json={"database_url": indexing.database_url}
        )
        assert refresh.status_code == 202
        job_id = refresh.json()["id"]
        async for event in recorder:  # wait for a batch to give up on the busy GPU
            if isinstance(event, GpuEvent) and event.status is GpuStatus.FALLBACK:
                break
        backend.gate.set()
        assert (await prewarm).status_code == 200
        await indexing.jobs.manager.wait(job_id)
        events = [e for e in live.guard.events.history(kinds={"gpu"}) if isinstance(e, GpuEvent)]
    job = (await live.http.get(f"/admin/jobs/{job_id}")).json()
    assert job["status"] == "completed"
    assert job["done"] == job["total"] == 14
    verdict = judge(events)
    assert verdict.good, verdict
    assert verdict.cpu_batches >= 1
    listed = (await live.http.get("/admin/jobs")).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]


async def test_chat_while_indexing_waits_at_most_one_batch(indexing: Indexing) -> None:
    live = indexing.live
    gpu = live.gateway.gpu_embedder
    assert isinstance(gpu, GatedEmbedder)
    indexing.live.backend.gate.set()  # type: ignore[attr-defined]
    subscription = live.guard.events.subscribe(kinds={"gpu"})
    job = await indexing.jobs.start_rag(indexing.documents)
    await gpu.busy.wait()  # one batch holds the GPU
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with live.http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.aiter_lines()
        while "waiting" not in (line := await anext(lines)):
            pass
        assert json.loads(line[6:])["gpuguard"]["holder"] == "rag-indexing"
        gpu.gate.set()
        text = [line async for line in lines]
    assert "data: [DONE]" in text
    await indexing.jobs.manager.wait(job.id)
    order = [
        (e.operation, e.status)
        for e in subscription.drain()
        if isinstance(e, GpuEvent) and e.status in (GpuStatus.STARTED, GpuStatus.WAITING)
    ]
    subscription.close()
    chat_waits = order.index(("chat", GpuStatus.WAITING))
    chat_starts = order.index(("chat", GpuStatus.STARTED))
    # between the chat queueing and getting the GPU, no other batch took the GPU
    assert order[chat_waits + 1 : chat_starts] == []
    assert order[:chat_waits] == [("rag-indexing", GpuStatus.STARTED)]
