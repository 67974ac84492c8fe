"""The on-disk vector store: one SQLite file with the sqlite-vec extension, no server.

Why SQLite + sqlite-vec: it is embedded (a file, no daemon), transactional (the chunk rows
and their vectors change in one ACID transaction, so a process killed mid-indexing leaves
the last committed state), readable while written (WAL), and the ``vec0`` virtual table
does the k-nearest-neighbour scan in C over compact float32 storage, with a partition key
per source kind (documents, schema) so that a kind-filtered search scans only its rows.
A brute-force scan over BLOBs in Python would have to pull every vector into memory per
query; ``vec0`` keeps search memory constant as the index grows. sqlite-vec 0.1 scans
exhaustively (exact results); at the sizes a local app indexes (up to millions of chunks)
that is fast enough and never loses recall.

This machine's stdlib ``sqlite3`` cannot load extensions, so the store connects through
``sqlean`` (a drop-in ``sqlite3`` built with extension loading). The file and SQLite's
files beside it are owner-only whatever the umask (:mod:`gpuguard.index._private`).

Layout: ``sources`` (one row per document file or database table, with the content hash
that makes re-indexing idempotent), ``chunks`` (text and JSON metadata) and ``vec_chunks``
(the vectors, sharing the chunk ids as rowids), plus ``meta`` (the dimension). Every
change of one source is one transaction: :meth:`VectorStore.replace_source` deletes the old
chunks and writes the new ones and the new hash together, or not at all.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, get_args

from .._exceptions import StoreError
from ._store_file import connect, database_errors

if TYPE_CHECKING:
    from ..embed import Vectors

__all__ = ["Chunk", "SearchHit", "SourceKind", "StoreStats", "VectorStore"]

SourceKind = Literal["document", "schema"]
"""What a source is: a document file or a database table (or view)."""

_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)
_MAX_K = 4096  # sqlite-vec's limit on k


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of text to store with its vector; ``metadata`` must be JSON-serialisable."""

    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: cosine similarity ``score`` (1 is identical), where it came from."""

    score: float
    kind: SourceKind
    source: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts by kind, for status pages."""

    path: str
    dimension: int | None
    sources: dict[str, int]
    chunks: dict[str, int]


class VectorStore:
    """Vectors, texts and sources in one SQLite file; thread-safe, crash-safe.

    The dimension is fixed by the first write (or ``dimension``) and checked on every write
    after, across reopenings. Methods block briefly; call them from a worker thread
    (``asyncio.to_thread``) inside an event loop.
    """

    def __init__(self, path: str | Path, *, dimension: int | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = connect(self.path)
        self._dimension = self._read_dimension()
        if dimension is not None:
            self._ensure_dimension(dimension)

    @property
    def dimension(self) -> int | None:
        """The vector size, once known."""
        return self._dimension

    # --- reading ---------------------------------------------------------------------------

    def source_hashes(self, kind: SourceKind, *, prefix: str = "") -> dict[str, str]:
        """``{name: content_hash}`` of the sources of ``kind`` whose names start with ``prefix``."""
        with self._lock:
            rows = self._query(
                "SELECT name, content_hash FROM sources WHERE kind = ? AND substr(name, 1, ?) = ?",
                (kind, len(prefix), prefix),
            )
        return {name: content_hash for name, content_hash in rows}

    def search(
        self, query: Vectors, *, k: int = 5, kinds: Iterable[SourceKind] | None = None
    ) -> list[SearchHit]:
        """The ``k`` chunks nearest to ``query`` (one vector), best first.

        ``kinds`` limits the search to documents or schema (default: both).
        """
        import numpy as np

        if not 1 <= k <= _MAX_K:
            raise ValueError(f"k must be between 1 and {_MAX_K}")
        wanted = _check_kinds(kinds)
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        with self._lock:
            if self._dimension is None:
                return []
            self._check_width(vector.shape[0])
            knn = "SELECT rowid, distance FROM vec_chunks WHERE embedding MATCH ? AND k = ?"
            params: tuple[Any, ...] = (vector.tobytes(), k)
            if len(wanted) == 1:
                knn += " AND kind = ?"
                params += (wanted[0],)
            rows = self._query(
                f"WITH knn AS ({knn}) "
                "SELECT knn.distance, s.kind, s.name, c.text, c.metadata FROM knn "
                "JOIN chunks c ON c.id = knn.rowid JOIN sources s ON s.id = c.source_id "
                "ORDER BY knn.distance",
                params,
            )
        return [
            SearchHit(1.0 - float(distance), kind, name, text, json.loads(metadata))
            for distance, kind, name, text, metadata in rows
        ]

    def stats(self) -> StoreStats:
        """How many sources and chunks of each kind the store holds."""
        with self._lock:
            rows = self._query(
                "SELECT kind, count(*), coalesce(sum(chunk_count), 0) FROM sources GROUP BY kind"
            )
        sources: dict[str, int] = dict.fromkeys(_KINDS, 0)
        chunks: dict[str, int] = dict.fromkeys(_KINDS, 0)
        for kind, n_sources, n_chunks in rows:
            sources[kind], chunks[kind] = n_sources, n_chunks
        return StoreStats(str(self.path), self._dimension, sources, chunks)

    def verify(self) -> list[str]:
        """Every inconsistency found (empty when the index is consistent).

        Checks SQLite's own integrity, that each source's chunk count matches its chunks,
        and that chunks and vectors pair up one to one.
        """
        problems: list[str] = []
        with self._lock:
            integrity = self._query("PRAGMA integrity_check")[0][0]
            if integrity != "ok":
                problems.append(f"integrity_check: {integrity}")
            for name, expected, actual in self._query(
                "SELECT s.name, s.chunk_count, count(c.id) FROM sources s "
                "LEFT JOIN chunks c ON c.source_id = s.id GROUP BY s.id "
                "HAVING s.chunk_count != count(c.id)"
            ):
                problems.append(f"{name}: {actual} chunks stored, {expected} recorded")
            if self._dimension is not None:
                vectors = {row[0] for row in self._query("SELECT rowid FROM vec_chunks")}
                chunk_ids = {row[0] for row in self._query("SELECT id FROM chunks")}
                if vectors != chunk_ids:
                    problems.append(
                        f"{len(chunk_ids - vectors)} chunks without vectors, "
                        f"{len(vectors - chunk_ids)} vectors without chunks"
                    )
        return problems

    # --- writing ---------------------------------------------------------------------------

    def replace_source(
        self,
        kind: SourceKind,
        name: str,
        *,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: Vectors,
    ) -> None:
        """Make ``chunks`` (with ``vectors``, row for row) the whole content of one source.

        One transaction: readers and a crash see either the old chunks or the new ones.
        """
        _check_kinds([kind])
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        with self._lock:
            if len(vectors):
                self._ensure_dimension(int(vectors.shape[1]))
            with self._transaction():
                self._delete_sources(kind, [name])
                cursor = self._conn.execute(
                    "INSERT INTO sources (kind, name, content_hash, chunk_count) "
                    "VALUES (?, ?, ?, ?)",
                    (kind, name, content_hash, len(chunks)),
                )
                self._insert_chunks(kind, int(cursor.lastrowid), chunks, vectors)

    def remove_sources(self, kind: SourceKind, names: Iterable[str]) -> int:
        """Delete these sources and their chunks in one transaction; returns how many existed."""
        _check_kinds([kind])
        with self._lock, self._transaction():
            return self._delete_sources(kind, list(names))

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VectorStore({str(self.path)!r}, dimension={self._dimension})"

    # --- internals -------------------------------------------------------------------------

    def _insert_chunks(
        self, kind: SourceKind, source_id: int, chunks: Sequence[Chunk], vectors: Vectors
    ) -> None:
        import numpy as np

        first_id = int(self._query("SELECT coalesce(max(id), 0) + 1 FROM chunks")[0][0])
        ids = range(first_id, first_id + len(chunks))
        self._conn.executemany(
            "INSERT INTO chunks (id, source_id, ordinal, text, metadata) VALUES (?, ?, ?, ?, ?)",
            (
                (chunk_id, source_id, ordinal, chunk.text, json.dumps(dict(chunk.metadata)))
                for ordinal, (chunk_id, chunk) in enumerate(zip(ids, chunks, strict=True))
            ),
        )
        self._conn.executemany(
            "INSERT INTO vec_chunks (rowid, embedding, kind) VALUES (?, ?, ?)",
            (
                (chunk_id, np.ascontiguousarray(vector, dtype=np.float32).tobytes(), kind)
                for chunk_id, vector in zip(ids, vectors, strict=True)
            ),
        )

    def _delete_sources(self, kind: SourceKind, names: list[str]) -> int:
        removed = 0
        for name in names:
            row = self._query("SELECT id FROM sources WHERE kind = ? AND name = ?", (kind, name))
            if not row:
                continue
            source_id = row[0][0]
            if self._dimension is not None:
                # One rowid at a time: vec0 looks a rowid up directly but scans for IN (...).
                self._conn.executemany(
                    "DELETE FROM vec_chunks WHERE rowid = ?",
                    self._query("SELECT id FROM chunks WHERE source_id = ?", (source_id,)),
                )
            self._conn.execute("DELETE FROM chunks WHERE source_id = ?", (source_id,))
            self._conn.execute("DELETE FROM sources WHERE id = ?", (source_id,))
            removed += 1
        return removed

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except database_errors() as exc:
            raise StoreError(f"vector store {self.path}: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self._conn.execute(sql, params).fetchall())
        except database_errors() as exc:
            raise StoreError(f"vector store {self.path}: {exc}") from exc

    def _read_dimension(self) -> int | None:
        row = self._query("SELECT value FROM meta WHERE key = 'dimension'")
        return int(row[0][0]) if row else None

    def _ensure_dimension(self, dimension: int) -> None:
        if self._dimension is None:
            if dimension < 1:
                raise ValueError("dimension must be >= 1")
            with self._transaction():
                self._conn.execute(
                    f"CREATE VIRTUAL TABLE IF NOT EXISTS vec_chunks USING vec0("
                    f"embedding float[{dimension}] distance_metric=cosine, "
                    f"kind text partition key)"
                )
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('dimension', ?)", (str(dimension),)
                )
            self._dimension = dimension
        self._check_width(dimension)

    def _check_width(self, dimension: int) -> None:
        if dimension != self._dimension:
            raise StoreError(
                f"vector store {self.path} holds {self._dimension}-dimensional vectors; "
                f"got {dimension}. Use the same embedding model, or a new store file."
            )


def _check_kinds(kinds: Iterable[SourceKind] | None) -> list[SourceKind]:
    wanted = list(_KINDS if kinds is None else dict.fromkeys(kinds))
    unknown = [kind for kind in wanted if kind not in _KINDS]
    if unknown or not wanted:
        raise ValueError(f"kinds must be among {_KINDS}, got {wanted}")
    return wanted
