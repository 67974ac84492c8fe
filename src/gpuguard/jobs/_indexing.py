"""The pipeline both jobs share: sources -> chunks -> bulk embedding -> one store write each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..embed import BulkEmbedder, BulkStats
from ..index import Chunk, SourceKind, VectorStore

if TYPE_CHECKING:
    from ..embed import Vectors

__all__ = ["PendingSource", "embed_and_store"]


@dataclass(slots=True)
class PendingSource:
    """A source whose chunks need (re-)embedding; it replaces the stored one when done."""

    kind: SourceKind
    name: str
    content_hash: str
    chunks: list[Chunk]
    vectors: list[Vectors] = field(default_factory=list)


_Piece = tuple[PendingSource, int]


async def embed_and_store(
    sources: AsyncIterable[PendingSource],
    *,
    store: VectorStore,
    bulk: BulkEmbedder,
    operation: str,
    on_stored: Callable[[PendingSource], None],
) -> BulkStats:
    """Embed every source's chunks in one stream of batches and store each source whole.

    Batches span sources, so the GPU sees full batches; a source is written (one
    transaction, in a worker thread) as soon as its last chunk is embedded, and its chunks
    are then dropped: memory holds the batches in flight and the sources they touch.
    """
    import numpy as np

    async with bulk.stream(_pieces(sources), text=_piece_text, operation=operation) as run:
        async for batch in run:
            for (source, ordinal), vector in zip(batch.items, batch.vectors, strict=True):
                source.vectors.append(vector)
                if ordinal == len(source.chunks) - 1:
                    await asyncio.to_thread(
                        store.replace_source,
                        source.kind,
                        source.name,
                        content_hash=source.content_hash,
                        chunks=source.chunks,
                        vectors=np.stack(source.vectors),
                    )
                    on_stored(source)
                    source.chunks, source.vectors = [], []
    return run.stats


async def _pieces(sources: AsyncIterable[PendingSource]) -> AsyncIterator[_Piece]:
    async for source in sources:
        if not source.chunks:
            raise ValueError(f"{source.name} has no chunks to embed")
        for ordinal in range(len(source.chunks)):
            yield source, ordinal


def _piece_text(piece: _Piece) -> str:
    source, ordinal = piece
    return source.chunks[ordinal].text
