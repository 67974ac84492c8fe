"""Describing a database costs a constant number of SQL statements, whatever its table count.

Counted on the real PostgreSQL and MariaDB of this machine with SQLAlchemy's
``before_cursor_execute`` event; they fail, never skip, when the server is down and CI=true.
PostgreSQL answers SQLAlchemy 2's ``get_multi_*`` in a few statements; MySQL/MariaDB have no
``get_multi_*`` in SQLAlchemy, so they fall back to one read per table.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
from sqlalchemy import event

from gpuguard.index import describe_database

POSTGRES = os.environ.get(
    "GPUGUARD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB = os.environ.get("GPUGUARD_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


def _server(url: str) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        engine.connect().close()
    except sqlalchemy.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the database at {url} is down: {exc}")
        pytest.skip(f"database at {url} is down")
    return engine


def _execute(engine: sqlalchemy.Engine, statements: list[str]) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def statements_to_describe(url: str, schema: str) -> list[str]:
    """Every statement ``describe_database`` sent to the database."""
    sent: list[str] = []

    def record(*args: object) -> None:
        sent.append(str(args[2]))

    event.listen(sqlalchemy.Engine, "before_cursor_execute", record)
    try:
        description = describe_database(url, schemas=[schema])
    finally:
        event.remove(sqlalchemy.Engine, "before_cursor_execute", record)
    assert description.tables, "nothing was described"
    return sent


def _tables(prefix: str, count: int, comment: Callable[[str], str]) -> list[str]:
    ddl = [f"CREATE TABLE {prefix}t0 (id integer PRIMARY KEY, name varchar(40))"]
    for table in range(1, count):
        name = f"{prefix}t{table}"
        ddl.append(
            f"CREATE TABLE {name} (id integer PRIMARY KEY, parent integer NOT NULL,"
            f" note varchar(80), FOREIGN KEY (parent) REFERENCES {prefix}t0 (id))"
        )
        ddl.append(comment(name))
    return ddl


@pytest.fixture
def postgres_schemas() -> Iterator[Callable[[int], tuple[str, str]]]:
    engine = _server(POSTGRES)
    made: list[str] = []

    def make(count: int) -> tuple[str, str]:
        schema = f"gg_{uuid.uuid4().hex[:10]}"
        made.append(schema)
        _execute(
            engine,
            [
                f"CREATE SCHEMA {schema}",
                *_tables(f"{schema}.", count, lambda name: f"COMMENT ON TABLE {name} IS 'rows'"),
                f"CREATE VIEW {schema}.v AS SELECT id FROM {schema}.t0",
            ],
        )
        return POSTGRES, schema

    try:
        yield make
    finally:
        _execute(engine, [f"DROP SCHEMA {schema} CASCADE" for schema in made])
        engine.dispose()


@pytest.fixture
def mariadb_databases() -> Iterator[Callable[[int], tuple[str, str]]]:
    server = _server(MARIADB)
    made: list[str] = []

    def make(count: int) -> tuple[str, str]:
        database = f"gg_{uuid.uuid4().hex[:10]}"
        made.append(database)
        _execute(server, [f"CREATE DATABASE {database}"])
        url = sqlalchemy.make_url(MARIADB).set(database=database).render_as_string(False)
        engine = sqlalchemy.create_engine(url)
        _execute(
            engine,
            [
                *_tables("", count, lambda name: f"ALTER TABLE {name} COMMENT = 'rows'"),
                "CREATE VIEW v AS SELECT id FROM t0",
            ],
        )
        engine.dispose()
        return url, database

    try:
        yield make
    finally:
        _execute(server, [f"DROP DATABASE {database}" for database in made])
        server.dispose()


def test_describing_50_tables_on_postgresql_takes_as_many_statements_as_5(
    postgres_schemas: Callable[[int], tuple[str, str]],
) -> None:
    few = statements_to_describe(*postgres_schemas(5))
    many = statements_to_describe(*postgres_schemas(50))

    assert len(many) == len(few) <= 20, (len(few), len(many))


def test_mariadb_without_get_multi_reads_each_table_once(
    mariadb_databases: Callable[[int], tuple[str, str]],
) -> None:
    # SQLAlchemy's MySQL dialect has no get_multi_*: it falls back to one SHOW CREATE TABLE
    # per table, parsed once for the columns, keys and comment.
    few = statements_to_describe(*mariadb_databases(5))
    many = statements_to_describe(*mariadb_databases(50))

    assert len(many) - len(few) == 45, (len(few), len(many))
    reads = [statement for statement in many if statement.startswith("SHOW CREATE TABLE")]
    assert all(sum(f".`t{table}`" in read for read in reads) == 1 for table in range(50))


def test_described_tables_keep_their_keys_and_comments_on_postgresql(
    postgres_schemas: Callable[[int], tuple[str, str]],
) -> None:
    url, schema = postgres_schemas(3)

    tables = {t.name: t for t in describe_database(url, schemas=[schema]).tables}

    assert sorted(tables) == ["t0", "t1", "t2", "v"]
    child = tables["t2"]
    assert child.primary_key == ("id",)
    assert child.comment == "rows"
    assert [(c.name, c.nullable, c.references) for c in child.columns] == [
        ("id", False, None),
        ("parent", False, f"{schema}.t0(id)"),
        ("note", True, None),
    ]
    assert (tables["v"].kind, tables["v"].primary_key) == ("view", ())
    assert "FROM" in (tables["v"].definition or "")
