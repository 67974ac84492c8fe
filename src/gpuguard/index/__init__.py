"""Indexing: database schema introspection, document loading and chunking, the vector store.

:class:`VectorStore` keeps chunks, vectors and sources in one SQLite file (sqlite-vec);
:func:`describe_database` turns a database's schema into :class:`TableDescription` s;
:func:`extract_text` and :func:`chunk_text` turn documents into overlapping chunks.
"""

from .documents import (
    DEFAULT_MAX_BYTES,
    SUPPORTED_SUFFIXES,
    TextChunk,
    chunk_text,
    content_hash,
    extract_text,
    find_documents,
    read_document,
)
from .schema import (
    ColumnDescription,
    DatabaseDescription,
    ForeignKeyDescription,
    TableDescription,
    database_label,
    describe_database,
)
from .store import Chunk, SearchHit, SourceKind, StoreStats, VectorStore

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_SUFFIXES",
    "Chunk",
    "ColumnDescription",
    "DatabaseDescription",
    "ForeignKeyDescription",
    "SearchHit",
    "SourceKind",
    "StoreStats",
    "TableDescription",
    "TextChunk",
    "VectorStore",
    "chunk_text",
    "content_hash",
    "database_label",
    "describe_database",
    "extract_text",
    "find_documents",
    "read_document",
]
