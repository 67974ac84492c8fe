from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import gpuguard.jobs
from gpuguard import EventBus, JobEvent, JobNotFound
from gpuguard.embed import BulkEmbedder
from gpuguard.index import VectorStore
from gpuguard.jobs import IndexResult, JobManager, process_rag_documents


def test_public_names_are_exactly_these() -> None:
    assert sorted(gpuguard.jobs.__all__) == sorted(
        [
            "IndexResult",
            "JobInfo",
            "JobIssue",
            "JobManager",
            "JobStatus",
            "new_job_id",
            "process_rag_documents",
            "refresh_database_schemas",
        ]
    )


async def test_a_job_runs_in_the_background_with_progress_then_completes(
    events: EventBus,
) -> None:
    manager = JobManager(events=events)
    halfway = asyncio.Event()
    finish = asyncio.Event()

    async def job(job_id: str) -> str:
        events.publish(JobEvent(job_id, "demo", "progress", 0.0, done=1, total=2, detail="1/2"))
        halfway.set()
        await finish.wait()
        return "done"

    info = manager.start("demo", job)
    assert (info.job, info.status) == ("demo", "running")
    await halfway.wait()
    running = manager.get(info.id)
    assert (running.status, running.done, running.total, running.detail) == (
        "running",
        1,
        2,
        "1/2",
    )
    assert [j.id for j in manager.list()] == [info.id]

    finish.set()
    finished = await manager.wait(info.id)
    assert (finished.status, finished.result, finished.error) == ("completed", "done", None)
    assert finished.finished_at is not None
    assert finished.to_dict()["result"] == "done"


async def test_cancel_stops_a_running_job() -> None:
    manager = JobManager()
    started = asyncio.Event()

    async def forever(job_id: str) -> None:
        started.set()
        await asyncio.Event().wait()

    info = manager.start("forever", forever)
    await started.wait()
    cancelled = await manager.cancel(info.id)
    assert cancelled.status == "cancelled"
    assert (await manager.cancel(info.id)).status == "cancelled"  # idempotent


async def test_a_failing_job_is_reported_failed() -> None:
    manager = JobManager()

    async def broken(job_id: str) -> None:
        raise RuntimeError("no luck")

    info = await manager.wait(manager.start("broken", broken).id)
    assert (info.status, info.error) == ("failed", "RuntimeError: no luck")


async def test_unknown_ids_are_job_not_found() -> None:
    manager = JobManager()
    with pytest.raises(JobNotFound, match="nope"):
        manager.get("nope")
    with pytest.raises(JobNotFound):
        await manager.cancel("nope")


async def test_history_is_bounded_to_the_latest_finished_jobs() -> None:
    manager = JobManager(history=2)

    async def quick(job_id: str) -> str:
        return job_id

    ids = [manager.start("quick", quick).id for _ in range(4)]
    for job_id in ids[-2:]:
        await manager.wait(job_id)

    assert [j.id for j in manager.list()] == ids[-2:]


async def test_manager_runs_an_indexing_job_and_mirrors_its_events(
    tmp_path: Path, store: VectorStore, bulk: BulkEmbedder, events: EventBus
) -> None:
    (tmp_path / "a.md").write_text("alpha beta")
    (tmp_path / "b.md").write_text("gamma delta")
    manager = JobManager(events=events)

    info = manager.start(
        "rag",
        lambda job_id: process_rag_documents(
            [tmp_path], store=store, bulk=bulk, events=events, job_id=job_id
        ),
    )
    finished = await manager.wait(info.id)

    assert finished.status == "completed"
    assert isinstance(finished.result, IndexResult)
    assert finished.result.embedded == 2
    assert (finished.done, finished.total) == (2, 2)
    assert finished.to_dict()["result"]["embedded"] == 2
    await manager.aclose()
