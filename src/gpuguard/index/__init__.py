"""Indexing: database schema introspection, document loading and chunking, the vector store.

:class:`VectorStore` keeps chunks, vectors and sources in one SQLite file (sqlite-vec);
:func:`describe_database` turns a database's schema into :class:`TableDescription` s;
:func:`extract_text` and :func:`chunk_text` turn documents into overlapping chunks;
:class:`SourcePolicy` says which documents and databases callers may index.

The store's names load on first use: the store pulls in NumPy and the embedding layer, which
the process that reads a database's schema (:func:`describe_database_isolated`) never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._connect import DatabaseTimeouts, resolve_source
from ._extraction import ISOLATED_SUFFIXES, TextExtractor
from ._isolated import describe_database_isolated
from ._private import private_directory
from .documents import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CHARS,
    SUPPORTED_SUFFIXES,
    DocumentSurvey,
    TextChunk,
    chunk_text,
    content_hash,
    extract_text,
    find_documents,
    read_document,
    survey_documents,
)
from .policy import LOOPBACK_HOSTS, SAFE_DRIVER_OPTIONS, SourcePolicy
from .schema import (
    ColumnDescription,
    DatabaseDescription,
    ForeignKeyDescription,
    TableDescription,
    database_label,
    describe_database,
)

if TYPE_CHECKING:
    from .store import Chunk, SearchHit, SourceKind, StoreStats, VectorStore

_STORE_NAMES = frozenset({"Chunk", "SearchHit", "SourceKind", "StoreStats", "VectorStore"})

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHARS",
    "ISOLATED_SUFFIXES",
    "LOOPBACK_HOSTS",
    "SAFE_DRIVER_OPTIONS",
    "SUPPORTED_SUFFIXES",
    "Chunk",
    "ColumnDescription",
    "DatabaseDescription",
    "DatabaseTimeouts",
    "DocumentSurvey",
    "ForeignKeyDescription",
    "SearchHit",
    "SourceKind",
    "SourcePolicy",
    "StoreStats",
    "TableDescription",
    "TextChunk",
    "TextExtractor",
    "VectorStore",
    "chunk_text",
    "content_hash",
    "database_label",
    "describe_database",
    "describe_database_isolated",
    "extract_text",
    "find_documents",
    "private_directory",
    "read_document",
    "resolve_source",
    "survey_documents",
]


def __getattr__(name: str) -> Any:
    if name in _STORE_NAMES:
        value = getattr(importlib.import_module(".store", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
