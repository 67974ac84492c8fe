"""Bulk embedding sorts texts by length within a window: little padding, results in input order."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from gpuguard import ConfigError, GpuEvent, GpuGuard, GpuStatus, Priority
from gpuguard.embed import (
    BulkEmbedder,
    EmbeddedBatch,
    EmbedderPair,
    FastEmbedEmbedder,
    SentenceTransformerEmbedder,
    Vectors,
)
from gpuguard.index import VectorStore
from gpuguard.jobs import process_rag_documents, refresh_database_schemas
from gpuguard.testing import HashEmbedder


class RecordingEmbedder(HashEmbedder):
    """A HashEmbedder that keeps every batch it was given; ``gate`` makes it wait for permits."""

    def __init__(self, *, device: str = "cpu", gate: bool = False) -> None:
        super().__init__(device=device, dimension=16)
        self.batches: list[list[str]] = []
        self.started: asyncio.Queue[list[str]] = asyncio.Queue()
        self.permits = None if not gate else asyncio.Semaphore(0)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        self.started.put_nowait(list(texts))
        if self.permits is not None:
            await self.permits.acquire()
        return await super().embed(texts)


def words(text: str) -> int:
    """The hash embedder's token count: its tokens are words."""
    return len(re.findall(r"\w+", text.lower())) or 1


def padding_ratio(batches: Sequence[Sequence[str]]) -> float:
    """Padded characters per real character: every text padded to its batch's longest."""
    padded = sum(max(len(text) for text in batch) * len(batch) for batch in batches)
    return padded / sum(len(text) for batch in batches for text in batch)


def schema_like(tables: int) -> list[str]:
    """One long table text followed by its three short column texts, table after table."""
    texts = []
    for table in range(tables):
        columns = [f"Column t{table}.c{c} of table public.t{table}: c{c} integer" for c in range(3)]
        texts.append(f"Table public.t{table}. Columns: " + "; ".join(columns) + ".")
        texts += columns
    return texts


async def test_texts_of_similar_length_share_a_batch_and_come_out_in_input_order() -> None:
    texts = schema_like(12)  # 48 texts: 6 windows of 4 batches of 2
    cpu = RecordingEmbedder()
    bulk = BulkEmbedder(EmbedderPair(None, cpu), batch_size=2, max_in_flight=8, sort_window=4)

    async with bulk.embed_batches(texts) as run:
        batches = [batch async for batch in run]

    expected = []
    for start in range(0, len(texts), 8):
        by_length = sorted(texts[start : start + 8], key=words, reverse=True)  # ties: input order
        expected += [by_length[at : at + 2] for at in range(0, 8, 2)]
    assert cpu.batches == expected
    arrival = [texts[start : start + 2] for start in range(0, 48, 2)]
    assert [b.items for b in batches] == arrival
    assert [b.index for b in batches] == list(range(24))
    reference = await HashEmbedder(dimension=16).embed(texts)
    np.testing.assert_allclose(np.vstack([b.vectors for b in batches]), reference, atol=1e-6)
    assert padding_ratio(cpu.batches) <= 1.1 < 1.3 < padding_ratio(arrival)
    assert (run.stats.texts, run.stats.cpu_batches) == (48, 24)


async def test_each_sorted_batch_takes_its_own_try_hold_and_falls_back_alone() -> None:
    guard = GpuGuard()
    gpu, cpu = RecordingEmbedder(device="cuda"), RecordingEmbedder(gate=True)
    pair = EmbedderPair(gpu, cpu)
    await pair.start(guard)
    bulk = BulkEmbedder(pair, guard, batch_size=2, max_in_flight=2, sort_window=2)
    long_a, long_b = "a long text " * 10, "another long text " * 10
    chat = await guard.acquire("chat", priority=Priority.INTERACTIVE)

    async def collect() -> list[EmbeddedBatch[str]]:
        async with bulk.embed_batches([long_a, "short a", long_b, "short b"]) as run:
            return [batch async for batch in run]

    collecting = asyncio.create_task(collect())
    assert await cpu.started.get() == [long_a, long_b]  # the GPU was busy: this one fell back
    chat.release()
    cpu.permits.release()  # type: ignore[union-attr]
    batches = await collecting

    assert gpu.batches == [["short a", "short b"]]  # the GPU was free again for the next one
    assert [b.items for b in batches] == [[long_a, "short a"], [long_b, "short b"]]
    assert [(b.device, b.fallback) for b in batches] == [("cpu", True), ("cpu", True)]
    fallbacks = [
        e
        for e in guard.events.history(kinds={"gpu"})
        if isinstance(e, GpuEvent) and e.status is GpuStatus.FALLBACK
    ]
    assert len(fallbacks) == 1
    assert not guard.locked


async def test_the_totals_count_the_batches_each_device_embedded() -> None:
    guard = GpuGuard()
    gpu, cpu = RecordingEmbedder(device="cuda"), RecordingEmbedder()
    pair = EmbedderPair(gpu, cpu)
    await pair.start(guard)
    bulk = BulkEmbedder(pair, guard, batch_size=2, max_in_flight=2, sort_window=2)
    chat = await guard.acquire("chat", priority=Priority.INTERACTIVE)
    async with bulk.embed_batches(["x " * 50, "y", "z " * 40, "w"]) as run:
        async for batch in run:
            assert batch.device == "cpu"
    chat.release()

    assert (run.stats.cpu_batches, run.stats.fallback_batches, run.stats.gpu_batches) == (2, 2, 0)
    assert cpu.batches == [["x " * 50, "z " * 40], ["y", "w"]]


class NoTokenizer(RecordingEmbedder):
    """An engine that cannot count tokens here (as a remote one): windows sort by characters."""

    def _token_lengths_sync(self, texts: list[str]) -> list[int] | None:
        return None


@pytest.mark.parametrize(
    ("cpu", "first"),
    [
        (RecordingEmbedder(), "one two three four"),
        (NoTokenizer(), "supercalifragilisticexpialidocious"),
    ],
)
async def test_a_window_sorts_by_the_cpu_models_tokens_where_it_can_count_them(
    cpu: RecordingEmbedder, first: str
) -> None:
    texts = ["supercalifragilisticexpialidocious", "one two three four"]
    bulk = BulkEmbedder(EmbedderPair(None, cpu), batch_size=1, max_in_flight=2, sort_window=2)

    async with bulk.embed_batches(texts) as run:
        assert [b.items async for b in run] == [texts[:1], texts[1:]]

    assert cpu.batches[0] == [first]


async def test_a_window_is_bounded_by_the_batches_in_flight() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield "x" * (pulled % 7 + 1)

    bulk = BulkEmbedder(
        EmbedderPair(None, HashEmbedder(dimension=16)), batch_size=4, max_in_flight=4, sort_window=4
    )
    async with bulk.embed_batches(endless()) as run:
        async for batch in run:
            assert pulled <= (batch.index + 1 + 4 + 1) * 4
            if batch.index == 20:
                break


def test_a_window_wider_than_the_batches_in_flight_is_refused() -> None:
    with pytest.raises(ConfigError, match="sort_window"):
        BulkEmbedder(EmbedderPair(None, HashEmbedder()), max_in_flight=4, sort_window=5)
    assert BulkEmbedder(EmbedderPair(None, HashEmbedder()), max_in_flight=4).sort_window == 2
    assert BulkEmbedder(EmbedderPair(None, HashEmbedder())).sort_window == 32


async def test_a_schema_refresh_pads_its_batches_little(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        for table in range(40):
            columns = ", ".join(f"column_{c} INTEGER" for c in range(6 + table % 3))
            connection.execute(f"CREATE TABLE table_{table} (id INTEGER PRIMARY KEY, {columns})")
    cpu = RecordingEmbedder()
    with VectorStore(tmp_path / "index.db") as store:
        result = await refresh_database_schemas(
            f"sqlite:///{database}", store=store, bulk=BulkEmbedder(EmbedderPair(None, cpu))
        )

    assert result.embedded == 40
    # What is left is the batch where the last table texts meet the first column texts.
    assert padding_ratio(cpu.batches) <= 1.2


async def test_rag_indexing_pads_its_batches_little(tmp_path: Path) -> None:
    documents = tmp_path / "documents"
    documents.mkdir()
    for number in range(128):  # short notes and one-page texts, one after the other
        words = range(3) if number % 2 else range(60)
        (documents / f"doc{number:02d}.txt").write_text(" ".join(f"word{w}" for w in words))
    cpu = RecordingEmbedder()
    with VectorStore(tmp_path / "index.db") as store:
        result = await process_rag_documents(
            [documents],
            store=store,
            bulk=BulkEmbedder(EmbedderPair(None, cpu)),
            chunk_size=500,
            chunk_overlap=0,
        )

    assert result.embedded == 128
    assert padding_ratio(cpu.batches) <= 1.1


async def test_the_local_engines_count_the_tokens_their_model_reads(
    minilm_cpu: SentenceTransformerEmbedder, onnx_dir: Path
) -> None:
    texts = ["hello world", "word " * 1000]
    onnx = FastEmbedEmbedder(model_path=onnx_dir, device="cpu")

    assert await minilm_cpu.token_lengths(texts) == [4, 256]  # [CLS] ... [SEP], truncated
    assert await onnx.token_lengths(texts) == [4, 256]
