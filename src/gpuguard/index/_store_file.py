"""Opening the vector store's SQLite file: owner-only, sqlite-vec loaded, WAL, the tables."""

from __future__ import annotations

import importlib.util
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from .._exceptions import StoreError
from ._private import SQLITE_SIDE_FILES, private_file

__all__ = ["connect", "database_errors"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    UNIQUE (kind, name)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks (source_id);
"""


def database_errors() -> type[Exception]:
    """The driver's error class (imported on first use)."""
    import sqlean

    error: type[Exception] = sqlean.Error
    return error


def _sqlite_vec_extension() -> str:
    """The loadable extension the sqlite-vec package ships, as ``sqlite_vec.loadable_path()``.

    Found without importing the package: importing it imports numpy where installed, which
    opening a store does not need (an idle server holds no numpy).
    """
    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("sqlite-vec is not installed")
    return os.path.join(next(iter(spec.submodule_search_locations)), "vec0")


def connect(path: Path) -> Any:
    """Open ``path`` with sqlite-vec loaded, WAL journalling and the tables created."""
    try:
        import sqlean

        extension = _sqlite_vec_extension()
    except ImportError as exc:
        raise StoreError("the vector store needs sqlean.py and sqlite-vec installed") from exc
    try:
        _make_private(path)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        conn = sqlean.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.enable_load_extension(True)
        conn.load_extension(extension)
        conn.enable_load_extension(False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a killed process loses nothing committed; a power cut may lose
        # the last transactions but never leaves the file inconsistent.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_SCHEMA)
    except (OSError, ValueError, sqlean.Error) as exc:
        raise StoreError(f"cannot open the vector store at {path}: {exc}") from exc
    return conn


def _make_private(path: Path) -> None:
    """The store and SQLite's files beside it owner-only, before SQLite opens any of them."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        with suppress(FileNotFoundError):
            private_file(path.with_name(path.name + suffix), create=False)
