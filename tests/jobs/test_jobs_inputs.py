"""Indexing inputs as people write them, and what the job says it did with each."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from gpuguard import EventBus, JobEvent
from gpuguard.embed import BulkEmbedder
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager, process_rag_documents, refresh_database_schemas

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"


def _reachable_or_skip(url: str) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        engine.connect().close()
    except sqlalchemy.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the database at {url} is down: {exc}")
        pytest.skip(f"database at {url} is down")
    return engine


@pytest.fixture
def two_schemas() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL schemas with one table each, dropped afterwards."""
    engine = _reachable_or_skip(POSTGRES)
    names = (f"gg_a_{uuid.uuid4().hex[:8]}", f"gg_b_{uuid.uuid4().hex[:8]}")
    with engine.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
            conn.exec_driver_sql(f"CREATE TABLE {name}.items (id int primary key, label text)")
    yield names
    with engine.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
    engine.dispose()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
async def test_postgres_urls_as_people_write_them_read_every_non_system_schema(
    scheme: str, two_schemas: tuple[str, str], store: VectorStore, bulk: BulkEmbedder
) -> None:
    first, second = two_schemas
    result = await refresh_database_schemas(
        f"{scheme}://postgres@127.0.0.1:5432/test", store=store, bulk=bulk
    )
    assert {first, second, "public"} <= set(result.schemas)
    assert not {"pg_catalog", "information_schema", "pg_toast"} & set(result.schemas)
    label = "postgresql://127.0.0.1:5432/test"
    assert f"{label}#{first}.items" in result.embedded_sources
    assert f"{label}#{second}.items" in result.embedded_sources


async def test_schemas_narrow_the_refresh_and_the_result_names_every_table(
    two_schemas: tuple[str, str], store: VectorStore, bulk: BulkEmbedder
) -> None:
    first, _ = two_schemas
    url = "postgres://postgres@127.0.0.1:5432/test"
    result = await refresh_database_schemas(url, store=store, bulk=bulk, schemas=[first])
    label = "postgresql://127.0.0.1:5432/test"
    assert result.schemas == (first,)
    assert result.embedded_sources == (f"{label}#{first}.items",)
    again = await refresh_database_schemas(url, store=store, bulk=bulk, schemas=[first])
    assert (again.embedded_sources, again.unchanged_sources) == ((), (f"{label}#{first}.items",))


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
async def test_mysql_and_mariadb_urls_map_to_the_installed_driver(
    scheme: str, store: VectorStore, bulk: BulkEmbedder
) -> None:
    engine = _reachable_or_skip(MARIADB)
    table = f"gg_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id int primary key)")
    try:
        result = await refresh_database_schemas(
            f"{scheme}://root@127.0.0.1:3306/test", store=store, bulk=bulk
        )
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")
        engine.dispose()
    assert result.schemas == ("test",)
    assert any(name.endswith(f"#test.{table}") for name in result.embedded_sources)


async def test_sqlite_urls_with_three_slashes(
    tmp_path: Path, store: VectorStore, bulk: BulkEmbedder
) -> None:
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    result = await refresh_database_schemas(
        f"sqlite:///{tmp_path / 'shop.db'}", store=store, bulk=bulk
    )
    assert result.schemas == ("main",)
    assert result.embedded_sources == (f"sqlite:///{tmp_path / 'shop.db'}#main.items",)


async def test_rag_names_every_file_it_left_out_in_the_kept_result(
    tmp_path: Path, store: VectorStore, bulk: BulkEmbedder, events: EventBus
) -> None:
    (tmp_path / "good.md").write_text("Good notes.")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "Makefile").write_text("all:")
    (tmp_path / ".secret.md").write_text("hidden")
    (tmp_path / "locked.md").write_text("nobody may read me")
    (tmp_path / "locked.md").chmod(0)
    manager = JobManager(events=events)
    info = manager.start(
        "rag",
        lambda job_id: process_rag_documents([tmp_path], store=store, bulk=bulk, job_id=job_id),
    )
    await manager.wait(info.id)
    for _ in range(3):  # other jobs come and go; the result stays with its job
        await manager.wait(manager.start("other", lambda job_id: asyncio.sleep(0)).id)
    kept = manager.get(info.id).to_dict()["result"]
    skipped = {Path(issue["source"]).name: issue["message"] for issue in kept["errors"]}
    assert "unsupported file type '.png'" in skipped["image.png"]
    assert "unsupported file type '(none)'" in skipped["Makefile"]
    assert "hidden" in skipped[".secret.md"]
    if os.geteuid() != 0:  # root reads anything
        assert "cannot read" in skipped["locked.md"]
    assert kept["embedded_sources"][0] == str(tmp_path / "good.md")
    await manager.aclose()


async def test_progress_is_followed_while_nobody_polls() -> None:
    events = EventBus(default_maxsize=8)
    manager = JobManager(events=events)

    async def chatty(job_id: str) -> None:
        for done in range(100):
            events.publish(JobEvent(job_id, "chatty", "progress", 0.0, done=done, detail=""))
            await asyncio.sleep(0)

    info = manager.start("chatty", chatty)
    await manager.wait(info.id)  # nobody calls get() or list() while the job runs
    assert events.dropped == 0
    assert manager.get(info.id).done == 99
    await manager.aclose()


async def test_jobs_beyond_the_limit_wait_queued_in_order() -> None:
    manager = JobManager(max_running=1)
    gates = [asyncio.Event() for _ in range(3)]
    ran: list[int] = []

    def job(n: int) -> Callable[[str], Awaitable[int]]:
        async def run(job_id: str) -> int:
            ran.append(n)
            await gates[n].wait()
            return n

        return run

    first, second = manager.start("rag", job(0)), manager.start("rag", job(1))
    other_kind = manager.start("schema", job(2))
    await asyncio.sleep(0)
    assert (first.status, second.status) == ("running", "queued")
    assert manager.get(other_kind.id).status == "running"
    assert ran == [0, 2]
    gates[0].set()
    await manager.wait(first.id)
    await asyncio.sleep(0)
    assert manager.get(second.id).status == "running"
    assert ran == [0, 2, 1]
    gates[1].set()
    gates[2].set()
    assert (await manager.wait(second.id)).result == 1
    await manager.aclose()


async def test_a_queued_job_can_be_cancelled_before_it_starts() -> None:
    manager = JobManager(max_running=1)
    hold = asyncio.Event()
    started: list[str] = []

    async def job(job_id: str) -> None:
        started.append(job_id)
        await hold.wait()

    first = manager.start("rag", job)
    queued = manager.start("rag", job)
    assert (await manager.cancel(queued.id)).status == "cancelled"
    hold.set()
    await manager.wait(first.id)
    assert started == [first.id]
    await manager.aclose()
