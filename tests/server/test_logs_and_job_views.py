"""The job views the page and the CLI read, secrets masking, and ``GET /admin/logs``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gpuguard.cli._samples import write_sample_documents
from gpuguard.embed import BulkEmbedder
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager
from gpuguard.server._jobs import IndexingJobs
from gpuguard.server._logs import LogRing
from gpuguard.settings import SourceSettings

from .conftest import Live, LiveFactory

SECRET = "pw-0f-the-db"


async def _with_jobs(live: Live, folder: Path) -> tuple[JobManager, VectorStore]:
    gateway = live.gateway
    assert gateway.embedders is not None
    store = VectorStore(folder / "index.db")
    manager = JobManager(events=gateway.events)
    bulk = BulkEmbedder(gateway.embedders, gateway.guard, batch_size=4)
    live.app_context().jobs = IndexingJobs(
        manager,
        store=store,
        bulk=bulk,
        events=gateway.events,
        sources=SourceSettings(document_roots=[folder]),
    )
    return manager, store


async def test_job_views_and_job_events_name_the_job_alike(
    make_live: LiveFactory, tmp_path: Path
) -> None:
    documents = write_sample_documents(tmp_path / "docs")
    (documents / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    async with make_live() as live:
        manager, store = await _with_jobs(live, tmp_path)
        started = (await live.http.post("/admin/jobs/rag", json={"path": str(documents)})).json()
        assert (started["job"], started["source"], started["status"]) == (
            "rag-indexing",
            str(documents),
            "running",
        )
        assert "kind" not in started  # the event kind "job" can never overwrite it
        await manager.wait(started["id"])
        view = (await live.http.get(f"/admin/jobs/{started['id']}")).json()
        events = [e.to_dict() for e in live.gateway.events.history(kinds={"job"})]
        assert {e["kind"] for e in events} == {"job"}
        assert {e["job"] for e in events} == {"rag-indexing"}
        # A viewer that merges events into the view keeps the job's real name.
        merged = {**view, **events[-1]}
        assert merged["job"] == "rag-indexing"
        # The skipped file is still listed once the job is over.
        assert view["status"] == "completed"
        assert len(view["issues"]) == 1
        assert "broken.pdf" in view["issues"][0]
        assert [e["issue"] for e in events if e["issue"]] == view["issues"]
        await manager.aclose()
        store.close()


async def test_a_database_source_is_shown_with_its_password_masked(
    make_live: LiveFactory, tmp_path: Path
) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test"
    async with make_live() as live:
        manager, store = await _with_jobs(live, tmp_path)
        started = (
            await live.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        ).json()
        assert started["source"] == "postgresql://postgres:***@127.0.0.1:5432/test"
        await manager.wait(started["id"])
        listing = (await live.http.get("/admin/jobs")).text
        events = json.dumps([e.to_dict() for e in live.gateway.events.history()])
        logs = (await live.http.get("/admin/logs")).text
        for text in (listing, events, logs):
            assert SECRET not in text
        await manager.aclose()
        store.close()


async def test_logs_route_filters_masks_and_pages(live: Live) -> None:
    log = logging.getLogger("gpuguard.logs-test")
    log.info("first line")
    log.warning("connecting to postgresql://app:%s@db.invalid/shop", SECRET)
    log.error("<script>alert(1)</script> failed")
    lines = (await live.http.get("/admin/logs", params={"logger": "gpuguard.logs-test"})).json()
    messages = [line["message"] for line in lines["lines"]]
    assert messages == [
        "first line",
        "connecting to postgresql://app:***@db.invalid/shop",
        "<script>alert(1)</script> failed",  # JSON is data: the page puts it in as text
    ]
    assert [line["level"] for line in lines["lines"]] == ["INFO", "WARNING", "ERROR"]
    worse = await live.http.get(
        "/admin/logs", params={"logger": "gpuguard.logs-test", "level": "WARNING"}
    )
    assert len(worse.json()["lines"]) == 2
    found = await live.http.get("/admin/logs", params={"contains": "DB.INVALID"})
    assert [line["logger"] for line in found.json()["lines"]] == ["gpuguard.logs-test"]
    after = lines["lines"][1]["seq"]
    newer = await live.http.get(
        "/admin/logs", params={"logger": "gpuguard.logs-test", "after": after}
    )
    assert [line["level"] for line in newer.json()["lines"]] == ["ERROR"]
    assert (await live.http.get("/admin/logs", params={"level": "LOUD"})).status_code == 400


def test_the_log_ring_is_bounded_and_restores_levels() -> None:
    target = logging.getLogger("gpuguard.ring-test")
    before = target.level
    ring = LogRing(3)
    ring.attach("gpuguard.ring-test")
    for n in range(5):
        target.info("line %d", n)
    ring.detach()
    target.info("after detach")
    assert [line.message for line in ring.lines()] == ["line 2", "line 3", "line 4"]
    assert [line.message for line in ring.lines(limit=1)] == ["line 4"]
    assert target.level == before
    with pytest.raises(ValueError, match="capacity"):
        LogRing(0)
