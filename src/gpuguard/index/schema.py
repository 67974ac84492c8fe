"""Database schema introspection (SQLAlchemy) into texts worth embedding.

:func:`describe_database` reads every table and view of a SQLite, PostgreSQL or
MySQL/MariaDB database (columns, types, nullability, primary and foreign keys, comments,
view definitions) into :class:`TableDescription` s. Each description renders one text for
the table and one per column, and hashes its definition so that a refresh re-embeds only
the tables that changed. Bad URLs, missing drivers, unreachable servers and nonsense
answers raise :class:`~gpuguard.SourceUnavailable`, naming the database without a secret.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .._exceptions import SourceUnavailable
from .._redact import redact
from ._connect import DatabaseTimeouts, connect_args, parse_url, url_only_args

__all__ = [
    "ColumnDescription",
    "DatabaseDescription",
    "ForeignKeyDescription",
    "TableDescription",
    "database_label",
    "describe_database",
]

_MAX_VIEW_DEFINITION = 2000


@dataclass(frozen=True, slots=True)
class ColumnDescription:
    """One column: SQL type as the database names it, keys and comment."""

    name: str
    type: str
    nullable: bool
    primary_key: bool
    comment: str | None = None
    references: str | None = None


@dataclass(frozen=True, slots=True)
class ForeignKeyDescription:
    """``columns`` refer to ``referred_columns`` of ``referred_table`` (schema-qualified)."""

    columns: tuple[str, ...]
    referred_table: str
    referred_columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TableDescription:
    """A table or view, ready to be turned into texts."""

    schema: str
    name: str
    kind: Literal["table", "view"]
    columns: tuple[ColumnDescription, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKeyDescription, ...] = ()
    comment: str | None = None
    definition: str | None = None

    @property
    def qualified_name(self) -> str:
        """``schema.name``."""
        return f"{self.schema}.{self.name}"

    @property
    def definition_hash(self) -> str:
        """Changes whenever anything this description says changes."""
        canonical = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def table_text(self) -> str:
        """One text describing the whole table: what a question about it should match."""
        lines = [f"{self.kind.capitalize()} {self.qualified_name}" + _sentence(self.comment)]
        lines.append("Columns: " + "; ".join(_column_summary(c) for c in self.columns) + ".")
        if self.primary_key:
            lines.append(f"Primary key: {', '.join(self.primary_key)}.")
        for key in self.foreign_keys:
            lines.append(
                f"Foreign key: {', '.join(key.columns)} references "
                f"{key.referred_table}({', '.join(key.referred_columns)})."
            )
        if self.definition:
            lines.append(f"Definition: {self.definition[:_MAX_VIEW_DEFINITION]}")
        return "\n".join(lines)

    def column_texts(self) -> list[tuple[str, str]]:
        """``(column name, text)`` for each column, naming its table."""
        return [
            (
                column.name,
                f"Column {self.name}.{column.name} of {self.kind} {self.qualified_name}: "
                f"{_column_summary(column)}.",
            )
            for column in self.columns
        ]


@dataclass(frozen=True, slots=True)
class DatabaseDescription:
    """Every table and view found, the schemas read, and the database's label in the index."""

    label: str
    dialect: str
    tables: list[TableDescription]
    schemas: tuple[str, ...] = ()


def database_label(url: str) -> str:
    """A stable, password-free name for the database ``url`` points at.

    Two URLs for the same database through different drivers get the same label.
    """
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        return f"sqlite:///{Path(database).resolve() if database else ':memory:'}"
    host = parsed.host or "local-socket"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{backend}://{host}{port}/{parsed.database or ''}"


def describe_database(
    url: str,
    *,
    schemas: Sequence[str] | None = None,
    timeouts: DatabaseTimeouts | None = None,
    url_only: bool = False,
) -> DatabaseDescription:
    """Introspect the tables and views of ``schemas`` (default: every non-system schema).

    MySQL and MariaDB call a database a schema: their default is the URL's database (every
    non-system one when the URL names none). Every connection is bounded by ``timeouts``
    (connect and per-statement). Blocking: run it in a worker thread, or in a child process
    (:func:`describe_database_isolated`) where the database is across a network.
    ``url_only`` (for a caller's URL): the driver is given nothing beyond what the URL says
    (:func:`~gpuguard.index._connect.url_only_args`).

    Raises :class:`SourceUnavailable` naming the database (never its password) for an
    unparseable URL, an unknown or missing driver, a missing SQLite file, a database that
    cannot be reached ("could not connect", the driver's words only in ``detail``) or one
    whose answers make no sense.
    """
    from sqlalchemy import create_engine, inspect

    timeouts = timeouts or DatabaseTimeouts()
    parsed = parse_url(url)
    label = database_label(url)
    backend = parsed.get_backend_name()
    database = parsed.database
    on_disk = backend == "sqlite" and database not in (None, "", ":memory:")
    if on_disk and not Path(str(database)).is_file():
        raise SourceUnavailable(f"no SQLite database file at {database}")
    try:
        arguments = connect_args(backend, timeouts) | (url_only_args(parsed) if url_only else {})
        engine = create_engine(parsed, connect_args=arguments, poolclass=_null_pool())
    except Exception as exc:  # the dialect's ArgumentError, the driver's ImportError
        raise SourceUnavailable(f"cannot use {label}: {_reason(exc)}") from exc
    try:
        try:
            connection = engine.connect()
        except Exception as exc:  # the driver's own errors are not always SQLAlchemy's
            raise SourceUnavailable(
                f"could not connect to the database source {label}",
                source=label,
                detail=_reason(exc),
            ) from exc
        with connection:
            try:
                inspector = inspect(connection)
                wanted = list(schemas) if schemas else _default_schemas(inspector, backend, parsed)
                tables = [t for schema in wanted for t in _describe_schema(inspector, schema)]
            except Exception as exc:  # a refusal, a timeout or an answer that makes no sense
                raise SourceUnavailable(
                    f"cannot read the schema of {label}: {_reason(exc)}", source=label
                ) from exc
    finally:
        engine.dispose()
    return DatabaseDescription(label, backend, tables, schemas=tuple(wanted))


_SYSTEM_SCHEMAS = frozenset(
    {"information_schema", "pg_catalog", "pg_toast", "mysql", "performance_schema", "sys"}
)


def _default_schemas(inspector: Any, backend: str, parsed: Any) -> list[str]:
    if backend == "sqlite":
        return ["main"]
    if backend in ("mysql", "mariadb") and parsed.database:
        return [str(parsed.database)]
    names = inspector.get_schema_names()
    return [
        str(name)
        for name in names
        if name not in _SYSTEM_SCHEMAS and not str(name).startswith(("pg_temp", "pg_toast_temp"))
    ]


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return redact(first if original is not None else f"{type(exc).__name__}: {first}")


def _describe_schema(inspector: Any, schema: str) -> list[TableDescription]:
    """Every table and view of ``schema``, read a whole schema at a time.

    SQLAlchemy 2's ``get_multi_*`` answer for every table of a schema at once: a constant
    number of statements on PostgreSQL, where describing one table at a time took five
    per table. A dialect without them (SQLite, MySQL/MariaDB) falls back inside SQLAlchemy
    to its per-table reflection, sharing one cached read per table.
    """
    return sorted(
        _describe_kind(inspector, schema, "table") + _describe_kind(inspector, schema, "view"),
        key=lambda table: table.name,
    )


def _describe_kind(
    inspector: Any, schema: str, kind: Literal["table", "view"]
) -> list[TableDescription]:
    from sqlalchemy.engine.reflection import ObjectKind

    is_table = kind == "table"
    objects = ObjectKind.TABLE if is_table else ObjectKind.VIEW
    columns = inspector.get_multi_columns(schema, kind=objects)
    if not columns:
        return []
    keys = inspector.get_multi_pk_constraint(schema, kind=objects) if is_table else {}
    foreign = inspector.get_multi_foreign_keys(schema, kind=objects) if is_table else {}
    comments = _table_comments(inspector, schema, objects)
    return [
        _describe(
            inspector,
            schema,
            str(key[1]),
            kind,
            columns=table_columns,
            primary_key=tuple((keys.get(key) or {}).get("constrained_columns") or ()),
            foreign_keys=foreign.get(key) or (),
            comment=comments.get(key),
        )
        for key, table_columns in columns.items()
    ]


def _describe(
    inspector: Any,
    schema: str,
    name: str,
    kind: Literal["table", "view"],
    *,
    columns: Any,
    primary_key: tuple[str, ...],
    foreign_keys: Any,
    comment: Any,
) -> TableDescription:
    """One table from what the inspector said about it (``Any``: the driver's answers)."""
    keys = tuple(
        ForeignKeyDescription(
            columns=tuple(key["constrained_columns"]),
            referred_table=f"{key.get('referred_schema') or schema}.{key['referred_table']}",
            referred_columns=tuple(key["referred_columns"]),
        )
        for key in foreign_keys
    )
    references = {
        column: f"{key.referred_table}({referred})"
        for key in keys
        for column, referred in zip(key.columns, key.referred_columns, strict=False)
    }
    described = tuple(
        ColumnDescription(
            name=column["name"],
            type=_type_name(column["type"], inspector.dialect),
            # SQLite reports INTEGER PRIMARY KEY as nullable; no key column ever is.
            nullable=bool(column.get("nullable", True)) and column["name"] not in primary_key,
            primary_key=column["name"] in primary_key,
            comment=column.get("comment") or None,
            references=references.get(column["name"]),
        )
        for column in columns
    )
    text = (comment or {}).get("text")
    return TableDescription(
        schema=schema,
        name=name,
        kind=kind,
        columns=described,
        primary_key=primary_key,
        foreign_keys=keys,
        comment=str(text) if text else None,
        definition=None if kind == "table" else _view_definition(inspector, name, schema),
    )


def _type_name(sql_type: Any, dialect: Any) -> str:
    try:
        return str(sql_type.compile(dialect=dialect))
    except Exception:  # a type the dialect cannot render: its class name still says a lot
        return type(sql_type).__name__


def _table_comments(inspector: Any, schema: str, objects: Any) -> dict[Any, Any]:
    try:
        return dict(inspector.get_multi_table_comment(schema, kind=objects))
    except NotImplementedError:  # SQLite has no comments
        return {}


def _view_definition(inspector: Any, name: str, schema: str) -> str | None:
    try:
        definition = inspector.get_view_definition(name, schema)
    except NotImplementedError:
        return None
    return " ".join(str(definition).split()) if definition else None


def _column_summary(column: ColumnDescription) -> str:
    parts = [f"{column.name} {column.type}"]
    if column.primary_key:
        parts.append("primary key")
    if not column.nullable:
        parts.append("not null")
    if column.references:
        parts.append(f"references {column.references}")
    summary = ", ".join(parts)
    return f"{summary} ({column.comment})" if column.comment else summary


def _sentence(comment: str | None) -> str:
    return f": {comment.strip()}" if comment else ""
