"""Schema refresh against a SQLite file and the real PostgreSQL and MariaDB on this machine.

PostgreSQL and MariaDB tests skip when the server is down, except under CI=true, where
they fail: CI must run them.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy

from gpuguard import EventBus, JobEvent, SourceUnavailable
from gpuguard.embed import BulkEmbedder
from gpuguard.index import VectorStore, database_label
from gpuguard.jobs import refresh_database_schemas
from gpuguard.testing import HashEmbedder

POSTGRES = os.environ.get(
    "GPUGUARD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB = os.environ.get("GPUGUARD_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


@dataclass
class ScratchDatabase:
    url: str
    schemas: list[str] | None
    execute: Callable[[str], None]
    add_column: str
    drop_view: str
    has_comments: bool


def _server_or_skip(url: str) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        engine.connect().close()
    except sqlalchemy.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the database at {url} is down: {exc}")
        pytest.skip(f"database at {url} is down")
    return engine


def _runner(engine: sqlalchemy.Engine) -> Callable[[str], None]:
    def execute(sql: str) -> None:
        with engine.begin() as conn:
            for statement in filter(str.strip, sql.split(";")):
                conn.exec_driver_sql(statement)

    return execute


@pytest.fixture
def sqlite_db(tmp_path: Path) -> ScratchDatabase:
    path = tmp_path / "shop.db"

    def execute(sql: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.executescript(sql)

    execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY,"
        " customer_id INTEGER NOT NULL REFERENCES customers (id), total NUMERIC(10, 2));"
        "CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;"
    )
    return ScratchDatabase(
        f"sqlite:///{path}",
        None,
        execute,
        "ALTER TABLE orders ADD COLUMN note TEXT",
        "DROP VIEW big_orders",
        has_comments=False,
    )


@pytest.fixture
def postgres_db() -> Iterator[ScratchDatabase]:
    engine = _server_or_skip(POSTGRES)
    execute = _runner(engine)
    schema = f"gg_{uuid.uuid4().hex[:10]}"
    execute(
        f"CREATE SCHEMA {schema};"
        f"CREATE TABLE {schema}.customers (id integer PRIMARY KEY, email text NOT NULL);"
        f"COMMENT ON TABLE {schema}.customers IS 'People who buy things';"
        f"COMMENT ON COLUMN {schema}.customers.email IS 'Where receipts are sent';"
        f"CREATE TABLE {schema}.orders (id integer PRIMARY KEY, customer_id integer NOT NULL"
        f" REFERENCES {schema}.customers (id), total numeric(10, 2));"
        f"CREATE VIEW {schema}.big_orders AS SELECT id, total FROM {schema}.orders"
        f" WHERE total > 100"
    )
    try:
        yield ScratchDatabase(
            POSTGRES,
            [schema],
            execute,
            f"ALTER TABLE {schema}.orders ADD COLUMN note text",
            f"DROP VIEW {schema}.big_orders",
            has_comments=True,
        )
    finally:
        execute(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.fixture
def mariadb_db() -> Iterator[ScratchDatabase]:
    server = _server_or_skip(MARIADB)
    database = f"gg_{uuid.uuid4().hex[:10]}"
    _runner(server)(f"CREATE DATABASE {database}")
    url = sqlalchemy.make_url(MARIADB).set(database=database).render_as_string(False)
    engine = sqlalchemy.create_engine(url)
    execute = _runner(engine)
    execute(
        "CREATE TABLE customers (id INT PRIMARY KEY,"
        " email VARCHAR(200) NOT NULL COMMENT 'Where receipts are sent')"
        " COMMENT='People who buy things';"
        "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT NOT NULL,"
        " total DECIMAL(10, 2), FOREIGN KEY (customer_id) REFERENCES customers (id))"
        " ENGINE=InnoDB;"
        "CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100"
    )
    try:
        yield ScratchDatabase(
            url,
            None,
            execute,
            "ALTER TABLE orders ADD COLUMN note TEXT",
            "DROP VIEW big_orders",
            has_comments=True,
        )
    finally:
        _runner(server)(f"DROP DATABASE {database}")
        engine.dispose()
        server.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database(request: pytest.FixtureRequest) -> ScratchDatabase:
    scratch: ScratchDatabase = request.getfixturevalue(
        f"{request.param.replace('postgresql', 'postgres')}_db"
    )
    return scratch


async def test_refresh_is_incremental_and_follows_drops(
    database: ScratchDatabase,
    store: VectorStore,
    bulk: BulkEmbedder,
    events: EventBus,
    texts_embedded: Callable[[], int],
) -> None:
    async def refresh() -> tuple[int, int, int, int]:
        before = texts_embedded()
        result = await refresh_database_schemas(
            database.url, store=store, bulk=bulk, events=events, schemas=database.schemas
        )
        assert result.errors == ()
        return result.embedded, result.skipped, result.removed, texts_embedded() - before

    # customers: 1 + 2 columns, orders: 1 + 3, big_orders: 1 + 2 -> 10 texts
    assert await refresh() == (3, 0, 0, 10)
    label = database_label(database.url)
    names = sorted(n.rsplit(".", 1)[1] for n in store.source_hashes("schema", prefix=label))
    assert names == ["big_orders", "customers", "orders"]
    hit = store.search(await HashEmbedder(dimension=64).embed(["customers email"]), k=1)[0]
    assert hit.kind == "schema"
    assert hit.metadata["table"] == "customers"
    if database.has_comments:
        texts = [h.text for h in store.search(await HashEmbedder(dimension=64).embed(["x"]), k=20)]
        assert any("People who buy things" in t for t in texts)
        assert any("email" in t and "Where receipts are sent" in t for t in texts)

    assert await refresh() == (0, 3, 0, 0)  # nothing changed: nothing embedded

    database.execute(database.add_column)
    assert await refresh() == (1, 2, 0, 5)  # only orders (1 + 4 columns) re-embedded

    database.execute(database.drop_view)
    assert await refresh() == (0, 2, 1, 0)
    assert not any(n.endswith(".big_orders") for n in store.source_hashes("schema"))
    assert store.verify() == []

    statuses = [e.status for e in events.history(kinds={"job"}) if isinstance(e, JobEvent)]
    assert statuses.count("started") == statuses.count("completed") == 4


@pytest.mark.parametrize(
    "bad_url",
    [
        "definitely not a url",
        "oracle+nosuchdriver://db/x",
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
    ],
)
async def test_a_bad_url_fails_clearly_and_keeps_the_previous_index(
    sqlite_db: ScratchDatabase,
    store: VectorStore,
    bulk: BulkEmbedder,
    events: EventBus,
    bad_url: str,
) -> None:
    await refresh_database_schemas(sqlite_db.url, store=store, bulk=bulk)
    before = store.source_hashes("schema")

    with pytest.raises(SourceUnavailable):
        await refresh_database_schemas(bad_url, store=store, bulk=bulk, events=events, job_id="j1")

    assert store.source_hashes("schema") == before
    assert len(before) == 3
    last = events.history(kinds={"job"})[-1]
    assert isinstance(last, JobEvent)
    assert (last.job_id, last.status) == ("j1", "failed")
