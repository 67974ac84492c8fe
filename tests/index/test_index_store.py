from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import gpuguard.index
from gpuguard import StoreError
from gpuguard.embed import Vectors
from gpuguard.index import Chunk, VectorStore


def unit(*values: float) -> Vectors:
    vector = np.array([values], dtype=np.float32)
    return vector / np.linalg.norm(vector)


def vectors(*rows: tuple[float, ...]) -> Vectors:
    return np.vstack([unit(*row) for row in rows])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    with VectorStore(tmp_path / "index.db") as opened:
        yield opened


def test_public_names_are_exactly_these() -> None:
    assert sorted(gpuguard.index.__all__) == sorted(
        [
            "DEFAULT_MAX_BYTES",
            "DEFAULT_MAX_CHARS",
            "ISOLATED_SUFFIXES",
            "TextExtractor",
            "LOOPBACK_HOSTS",
            "SAFE_DRIVER_OPTIONS",
            "SUPPORTED_SUFFIXES",
            "DatabaseTimeouts",
            "DocumentSurvey",
            "SourcePolicy",
            "describe_database_isolated",
            "resolve_source",
            "survey_documents",
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
            "private_directory",
            "read_document",
        ]
    )


def test_search_returns_scores_sources_and_texts_best_first(store: VectorStore) -> None:
    store.replace_source(
        "document",
        "/docs/a.md",
        content_hash="h1",
        chunks=[Chunk("about cats", {"start": 0}), Chunk("about taxes", {"start": 10})],
        vectors=vectors((1, 0, 0), (0, 1, 0)),
    )
    store.replace_source(
        "schema",
        "db#public.cats",
        content_hash="h2",
        chunks=[Chunk("Table cats")],
        vectors=vectors((0.9, 0.1, 0)),
    )

    hits = store.search(unit(1, 0, 0), k=3)

    assert [(h.kind, h.source, h.text) for h in hits] == [
        ("document", "/docs/a.md", "about cats"),
        ("schema", "db#public.cats", "Table cats"),
        ("document", "/docs/a.md", "about taxes"),
    ]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].metadata == {"start": 0}
    assert hits[0].score > hits[1].score > hits[2].score
    assert [h.kind for h in store.search(unit(1, 0, 0), k=3, kinds=["schema"])] == ["schema"]


def test_replacing_a_source_swaps_all_its_chunks(store: VectorStore) -> None:
    store.replace_source(
        "document",
        "f",
        content_hash="old",
        chunks=[Chunk("a"), Chunk("b")],
        vectors=vectors((1, 0), (0, 1)),
    )
    store.replace_source(
        "document", "f", content_hash="new", chunks=[Chunk("c")], vectors=vectors((1, 1))
    )

    assert store.source_hashes("document") == {"f": "new"}
    assert [h.text for h in store.search(unit(1, 0), k=10)] == ["c"]
    assert store.stats().chunks == {"document": 1, "schema": 0}
    assert store.verify() == []


def test_a_failed_replacement_leaves_the_old_chunks(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.replace_source(
        "document", "f", content_hash="old", chunks=[Chunk("old text")], vectors=vectors((1, 0))
    )

    def crash(*args: object) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(store, "_insert_chunks", crash)
    with pytest.raises(StoreError, match="disk full"):
        store.replace_source(
            "document", "f", content_hash="new", chunks=[Chunk("new")], vectors=vectors((0, 1))
        )

    assert store.source_hashes("document") == {"f": "old"}
    assert [h.text for h in store.search(unit(1, 0))] == ["old text"]
    assert store.verify() == []


def test_remove_and_prefix_listing(store: VectorStore) -> None:
    for name in ["/a/x.md", "/a/y.md", "/ab/z.md"]:
        store.replace_source(
            "document", name, content_hash=name, chunks=[Chunk(name)], vectors=vectors((1, 0))
        )

    assert sorted(store.source_hashes("document", prefix="/a/")) == ["/a/x.md", "/a/y.md"]
    assert store.remove_sources("document", ["/a/x.md", "/missing"]) == 1
    assert sorted(store.source_hashes("document")) == ["/a/y.md", "/ab/z.md"]
    assert store.verify() == []


def test_the_dimension_is_fixed_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    with VectorStore(path) as store:
        assert store.search(unit(1, 0)) == []  # empty store: nothing to find
        store.replace_source(
            "schema", "t", content_hash="h", chunks=[Chunk("t")], vectors=vectors((1, 0))
        )
    with VectorStore(path) as reopened:
        assert reopened.dimension == 2
        assert [h.text for h in reopened.search(unit(0, 1))] == ["t"]
        with pytest.raises(StoreError, match="holds 2-dimensional vectors; got 3"):
            reopened.replace_source(
                "schema", "u", content_hash="h", chunks=[Chunk("u")], vectors=vectors((1, 0, 0))
            )
    with pytest.raises(StoreError, match="holds 2-dimensional"):
        VectorStore(path, dimension=384)


def test_an_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the vector store"):
        VectorStore(tmp_path / "not-a-db")


def test_mismatched_chunks_and_vectors_are_refused(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="2 chunks but 1 vectors"):
        store.replace_source(
            "document",
            "f",
            content_hash="h",
            chunks=[Chunk("a"), Chunk("b")],
            vectors=vectors((1, 0)),
        )
