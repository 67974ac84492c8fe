from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gpuguard import EventBus, JobEvent
from gpuguard.embed import BulkEmbedder
from gpuguard.index import VectorStore
from gpuguard.jobs import process_rag_documents
from gpuguard.testing import HashEmbedder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("Plain notes about the quarterly budget. " * 40)
    (root / "guide.md").write_text("# Guide\n\nHow to rotate the API keys safely.")
    (root / "sub" / "page.html").write_text("<html><body><p>Welcome aboard.</p></body></html>")
    (root / "empty.md").write_text("")
    (root / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    return root


class Rewarm:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    async def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


async def test_indexes_good_files_reports_bad_ones_and_rewarms(
    folder: Path, store: VectorStore, bulk: BulkEmbedder, events: EventBus
) -> None:
    rewarm = Rewarm()

    result = await process_rag_documents(
        [folder],
        store=store,
        bulk=bulk,
        events=events,
        rewarm=rewarm,
        chunk_size=200,
        chunk_overlap=40,
        job_id="rag-1",
    )

    assert (result.embedded, result.skipped, result.removed) == (3, 0, 0)
    assert sorted(Path(e.source).name for e in result.errors) == [
        "blob.txt",
        "broken.pdf",
        "empty.md",
    ]
    messages = " ".join(e.message for e in result.errors)
    assert "binary content" in messages
    assert "empty file" in messages
    assert "corrupt" in messages
    assert rewarm.calls == 1
    assert result.texts == store.stats().chunks["document"] > 3  # notes.txt has many chunks
    assert result.gpu_batches + result.cpu_batches == -(-result.texts // 4)
    hit = store.search(await HashEmbedder(dimension=64).embed(["rotate API keys"]), k=1)[0]
    assert hit.source == str(folder / "guide.md")
    assert hit.metadata["path"] == hit.source

    job_events = [e for e in events.history(kinds={"job"}) if isinstance(e, JobEvent)]
    assert {e.job_id for e in job_events} == {"rag-1"}
    assert job_events[0].status == "started"
    assert job_events[-1].status == "completed"
    assert job_events[-1].done == job_events[-1].total == 6


async def test_reindexing_is_idempotent_and_follows_changes_and_deletions(
    folder: Path,
    store: VectorStore,
    bulk: BulkEmbedder,
    texts_embedded: Callable[[], int],
) -> None:
    rewarm = Rewarm()
    await process_rag_documents([folder], store=store, bulk=bulk, rewarm=rewarm)

    before = texts_embedded()
    unchanged = await process_rag_documents([folder], store=store, bulk=bulk, rewarm=rewarm)
    assert (unchanged.embedded, unchanged.skipped, unchanged.removed) == (0, 3, 0)
    assert texts_embedded() == before
    assert rewarm.calls == 1

    (folder / "guide.md").write_text("# Guide\n\nNow about backups instead.")
    (folder / "sub" / "page.html").unlink()
    changed = await process_rag_documents([folder], store=store, bulk=bulk, rewarm=rewarm)

    assert (changed.embedded, changed.skipped, changed.removed) == (1, 1, 1)
    assert texts_embedded() == before + 1
    assert sorted(Path(n).name for n in store.source_hashes("document")) == [
        "guide.md",
        "notes.txt",
    ]
    texts = [h.text for h in store.search(await HashEmbedder(dimension=64).embed(["x"]), k=50)]
    assert not any("rotate" in t for t in texts)
    assert any("backups" in t for t in texts)
    assert store.verify() == []


async def test_a_deleted_file_given_by_name_is_removed(
    folder: Path, store: VectorStore, bulk: BulkEmbedder
) -> None:
    target = folder / "guide.md"
    await process_rag_documents([target], store=store, bulk=bulk)
    target.unlink()

    result = await process_rag_documents([target], store=store, bulk=bulk)

    assert (result.removed, result.errors) == (1, ())
    assert store.source_hashes("document") == {}


async def test_a_missing_path_is_reported_not_fatal(
    folder: Path, store: VectorStore, bulk: BulkEmbedder
) -> None:
    result = await process_rag_documents(
        [folder / "nowhere", folder / "guide.md"], store=store, bulk=bulk
    )
    assert result.embedded == 1
    assert [e.message for e in result.errors] == [
        f"{folder / 'nowhere'}: no such file or directory"
    ]


async def test_a_failed_rewarm_is_reported_not_raised(
    folder: Path, store: VectorStore, bulk: BulkEmbedder
) -> None:
    result = await process_rag_documents(
        [folder / "guide.md"], store=store, bulk=bulk, rewarm=Rewarm(RuntimeError("LLM down"))
    )
    assert result.embedded == 1
    assert [(e.source, e.message) for e in result.errors] == [
        ("rewarm", "re-warming the LLM failed: LLM down")
    ]
