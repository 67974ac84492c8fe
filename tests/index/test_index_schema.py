from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gpuguard import SourceUnavailable
from gpuguard.index import database_label, describe_database

SHOP = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    total NUMERIC(10, 2)
);
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;
"""


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SHOP)
    return path


def test_tables_views_columns_and_keys_are_described(shop: Path) -> None:
    description = describe_database(f"sqlite:///{shop}")

    assert description.dialect == "sqlite"
    assert description.label == f"sqlite:///{shop.resolve()}"
    tables = {t.name: t for t in description.tables}
    assert sorted(tables) == ["big_orders", "customers", "orders"]
    orders = tables["orders"]
    assert (orders.kind, orders.qualified_name, orders.primary_key) == (
        "table",
        "main.orders",
        ("id",),
    )
    assert [(c.name, c.type, c.nullable) for c in orders.columns] == [
        ("id", "INTEGER", False),
        ("customer_id", "INTEGER", False),
        ("total", "NUMERIC(10, 2)", True),
    ]
    assert orders.columns[1].references == "main.customers(id)"
    assert tables["big_orders"].kind == "view"
    assert "WHERE total > 100" in (tables["big_orders"].definition or "")


def test_texts_name_everything_a_question_might_mention(shop: Path) -> None:
    tables = {t.name: t for t in describe_database(f"sqlite:///{shop}").tables}

    text = tables["orders"].table_text()
    assert text.startswith("Table main.orders")
    assert "customer_id INTEGER, not null, references main.customers(id)" in text
    assert "Foreign key: customer_id references main.customers(id)." in text
    assert "Primary key: id." in text
    assert tables["big_orders"].table_text().startswith("View main.big_orders")
    columns = dict(tables["orders"].column_texts())
    assert columns["total"] == "Column orders.total of table main.orders: total NUMERIC(10, 2)."


def test_the_definition_hash_follows_the_definition(shop: Path) -> None:
    before = {t.name: t.definition_hash for t in describe_database(f"sqlite:///{shop}").tables}
    with sqlite3.connect(shop) as conn:
        conn.execute("ALTER TABLE customers ADD COLUMN name TEXT")
    after = {t.name: t.definition_hash for t in describe_database(f"sqlite:///{shop}").tables}

    assert before["customers"] != after["customers"]
    assert before["orders"] == after["orders"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a valid database URL"),
        ("nosuchdb://host/db", "cannot use nosuchdb://host/db"),
        ("sqlite:////nonexistent/dir/shop.db", "no SQLite database file"),
        (
            "postgresql+psycopg://someone:s3cret@127.0.0.1:1/db",
            "could not connect to the database source postgresql://127.0.0.1:1/db$",
        ),
    ],
)
def test_bad_urls_are_source_unavailable_without_leaking_passwords(url: str, message: str) -> None:
    with pytest.raises(SourceUnavailable, match=message) as caught:
        describe_database(url)
    assert "s3cret" not in str(caught.value)


def test_labels_ignore_driver_and_password() -> None:
    assert (
        database_label("postgresql+psycopg://u:pw@db.local:5432/app")
        == database_label("postgresql://other@db.local:5432/app")
        == "postgresql://db.local:5432/app"
    )


def test_a_malformed_answer_is_a_source_error_naming_the_source(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.engine.reflection import Inspector

    monkeypatch.setattr(Inspector, "get_multi_pk_constraint", lambda *args, **kwargs: None)
    with pytest.raises(SourceUnavailable) as caught:
        describe_database(f"sqlite:///{shop}")
    assert str(caught.value).startswith(f"cannot read the schema of sqlite:///{shop.resolve()}")
    assert caught.value.source == f"sqlite:///{shop.resolve()}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw1@127.0.0.1:1/db?password=pw2", "postgresql://127.0.0.1:1/db"),
        ("mysql://u@127.0.0.1:1/db?password=pw2", "mysql://127.0.0.1:1/db"),
    ],
)
def test_connection_failures_say_one_thing_and_keep_details_for_the_operator(
    url: str, shown: str
) -> None:
    with pytest.raises(SourceUnavailable) as caught:
        describe_database(url)
    assert str(caught.value) == f"could not connect to the database source {shown}"
    assert caught.value.detail  # the driver's words, for the log
    assert "pw1" not in caught.value.detail
    assert "pw2" not in caught.value.detail
