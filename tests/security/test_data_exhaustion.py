"""Resource exhaustion through the job API: the queue, what a job keeps, what the list returns.

The queue is tried with jobs that block on an event (no sleeps) and over HTTP with schema
refreshes at a loopback port that accepts and then never answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpuguard import JobQueueFull
from gpuguard.jobs import JobManager

from ._listeners import stalling_server
from .conftest import ServeFactory


async def test_queued_jobs_are_bounded_in_all_and_per_caller() -> None:
    manager = JobManager(max_running=1, max_queued=3, max_queued_per_caller=2)
    release = asyncio.Event()

    async def blocked(job_id: str) -> None:
        await release.wait()

    manager.start("demo", blocked, caller="a")  # runs
    manager.start("demo", blocked, caller="a")
    manager.start("demo", blocked, caller="a")
    with pytest.raises(JobQueueFull, match="2 of your jobs are waiting") as mine:
        manager.start("demo", blocked, caller="a")
    assert mine.value.retry_after_s >= 1
    manager.start("demo", blocked, caller="b")
    with pytest.raises(JobQueueFull, match="3 jobs are waiting"):
        manager.start("demo", blocked, caller="c")
    assert [job.status for job in manager.list()].count("queued") == 3
    manager.start("other", blocked, caller="c")  # another kind with a free place runs
    release.set()
    finished = [await manager.wait(job.id) for job in manager.list()]
    assert [job.status for job in finished] == ["completed"] * 5


async def test_a_cancelled_queued_job_frees_its_place() -> None:
    manager = JobManager(max_running=1, max_queued=1, max_queued_per_caller=1)
    release = asyncio.Event()

    async def blocked(job_id: str) -> None:
        await release.wait()

    manager.start("demo", blocked)
    queued = manager.start("demo", blocked)
    with pytest.raises(JobQueueFull):
        manager.start("demo", blocked)
    await manager.cancel(queued.id)
    manager.start("demo", blocked)
    release.set()
    await manager.aclose()


async def test_a_flood_of_refreshes_is_answered_503_with_retry_after(
    serve: ServeFactory,
) -> None:
    limits = {
        "GPUGUARD_SOURCES__MAX_QUEUED_JOBS": "2",
        "GPUGUARD_SOURCES__MAX_QUEUED_JOBS_PER_CALLER": "2",
    }
    async with serve(**limits) as server, stalling_server() as silent:
        url = f"postgresql://postgres@127.0.0.1:{silent.port}/test"
        answers = []
        for _ in range(4):
            response = await server.http.post(
                "/admin/jobs/schema-refresh", json={"database_url": url}
            )
            answers.append(response.status_code)
        assert answers == [202, 202, 202, 503]
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "job_queue_full"
        listing = (await server.http.get("/admin/jobs")).json()
        assert listing["total"] == 3
        assert (await server.http.get("/health")).status_code == 200


async def test_what_a_job_keeps_is_bounded_however_many_files_it_saw(
    serve: ServeFactory, root: Path
) -> None:
    many = root / "docs" / "many"
    many.mkdir()
    for index in range(1500):
        (many / f"file-{index:05d}.unsupported").write_bytes(b"x")
    async with serve() as server:
        started = await server.http.post("/admin/jobs/rag", json={"path": "docs/many"})
        job = await server.finished_job(started.json())
        assert job["status"] == "completed"
        result = job["result"]
        assert result["error_count"] == 1500
        assert len(result["errors"]) == 100
        assert len(job["issues"]) <= 200
        assert len((await server.http.get(f"/admin/jobs/{job['id']}")).content) < 64_000


async def test_the_job_list_is_paged(serve: ServeFactory) -> None:
    async with serve() as server:
        ids = []
        for _ in range(3):
            started = await server.http.post("/admin/jobs/rag", json={"path": "docs/handbook.md"})
            ids.append((await server.finished_job(started.json()))["id"])
        first = (await server.http.get("/admin/jobs?limit=2")).json()
        rest = (await server.http.get("/admin/jobs?limit=2&offset=2")).json()
        assert first["total"] == rest["total"] == 3
        assert [job["id"] for job in first["jobs"] + rest["jobs"]] == ids[::-1]
        assert (await server.http.get("/admin/jobs?limit=100000")).status_code == 400
