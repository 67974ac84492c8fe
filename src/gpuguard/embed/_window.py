"""Bulk embedding's sort window: texts of similar length share a batch, results keep input order.

A model pads every text of a batch to the batch's longest, so texts fed in arrival order
(a table's long summary beside its short column texts) make the model run on padding:
3.18 padded tokens per real token on a schema refresh. ``SentenceTransformer.encode``
sorts its whole input by length for this reason; a bulk run cannot (its input may be
endless), so it sorts within a window of a few batches instead. Each window is read
whole, its texts cut into batches longest first (ties in input order) by the CPU model's
token counts where its engine has a tokenizer (characters otherwise), and once every
batch of the window is embedded, the vectors are put back in input order and handed on
cut into the input's own batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._batches import EmbeddedBatch, chunked

__all__ = ["Window", "windows"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Window(Generic[T]):
    """Consecutive input batches, and the batches their texts are embedded in.

    ``first`` is the index of the window's first input batch; ``slices`` are its input
    batches in input order; ``items`` and ``texts`` its items and their texts in input
    order; ``order`` the positions of ``texts``, longest text first, which
    :meth:`embedding_batches` cuts into batches.
    """

    first: int
    slices: list[list[T]]
    items: list[T]
    texts: list[str]
    order: list[int]

    @classmethod
    def sort(
        cls, first: int, slices: list[list[T]], texts: list[str], lengths: Sequence[int]
    ) -> Window[T]:
        """The window of ``slices`` from input batch ``first``; ``lengths`` order its ``texts``."""
        items = [item for part in slices for item in part]
        order = sorted(range(len(texts)), key=lambda position: -lengths[position])
        return cls(first, slices, items, texts, order)

    def embedding_batches(self, size: int) -> list[list[int]]:
        """The positions each embedding batch holds: ``size`` texts of similar length."""
        return [self.order[start : start + size] for start in range(0, len(self.order), size)]

    def items_at(self, positions: Sequence[int]) -> list[T]:
        """The items at ``positions`` of the window."""
        return [self.items[position] for position in positions]

    def assemble(
        self, embedded: Sequence[tuple[Sequence[int], EmbeddedBatch[T]]]
    ) -> list[EmbeddedBatch[T]]:
        """The input batches with their vectors, from every embedding batch of the window.

        An input batch's ``device`` is ``"gpu"`` only when all its texts ran on the GPU;
        ``fallback`` is True when any of them fell back; ``seconds`` is its texts' share
        of the embedding time.
        """
        import numpy as np

        count = len(self.texts)
        first_vectors = embedded[0][1].vectors
        vectors = np.empty((count, first_vectors.shape[1]), dtype=first_vectors.dtype)
        on_gpu = np.zeros(count, dtype=bool)
        fell_back = np.zeros(count, dtype=bool)
        seconds = np.zeros(count)
        for positions, batch in embedded:
            at = np.asarray(positions, dtype=np.intp)
            vectors[at] = batch.vectors
            on_gpu[at] = batch.device == "gpu"
            fell_back[at] = batch.fallback
            seconds[at] = batch.seconds / len(positions)
        batches: list[EmbeddedBatch[T]] = []
        start = 0
        for offset, items in enumerate(self.slices):
            end = start + len(items)
            batches.append(
                EmbeddedBatch(
                    self.first + offset,
                    items,
                    vectors[start:end],
                    "gpu" if bool(on_gpu[start:end].all()) else "cpu",
                    bool(fell_back[start:end].any()),
                    float(seconds[start:end].sum()),
                )
            )
            start = end
        return batches


async def windows(
    items: Iterable[T] | AsyncIterable[T],
    size: int,
    per_window: int,
    slots: asyncio.Semaphore,
) -> AsyncIterator[list[list[T]]]:
    """Input batches of ``size`` items, ``per_window`` at a time (fewer at the input's end).

    Each input batch takes one of ``slots`` before it starts filling, so a window waits
    for room as the input batches before it are taken by the consumer. When the input
    fails, the batches read before the failure come out first, then the error.
    """
    window: list[list[T]] = []
    try:
        async for batch in chunked(items, size, slots):
            window.append(batch)
            if len(window) == per_window:
                yield window
                window = []
    except Exception:  # the input failed: what was read before it is still embedded
        if window:
            yield window
        raise
    if window:
        yield window
