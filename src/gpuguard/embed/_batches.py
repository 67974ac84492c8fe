"""Bulk embedding's batches: what comes out of a run, its totals, and the input cut into lists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["BulkStats", "Device", "EmbeddedBatch", "chunked"]

T = TypeVar("T")

Device = Literal["gpu", "cpu"]


@dataclass(frozen=True, slots=True)
class EmbeddedBatch(Generic[T]):
    """One batch out of a :class:`~gpuguard.embed.BulkRun`.

    ``index`` counts batches from 0 in input order; ``device`` says where it ran;
    ``fallback`` is True when it was meant for the GPU but the GPU was busy; ``seconds`` is
    the time spent embedding it.
    """

    index: int
    items: list[T]
    vectors: Vectors
    device: Device
    fallback: bool
    seconds: float


@dataclass(slots=True)
class BulkStats:
    """Running totals of one :class:`~gpuguard.embed.BulkRun`."""

    texts: int = 0
    gpu_batches: int = 0
    cpu_batches: int = 0
    fallback_batches: int = 0
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0

    def add(self, batch: EmbeddedBatch[Any]) -> None:
        """Count one finished batch."""
        self.texts += len(batch.items)
        if batch.device == "gpu":
            self.gpu_batches += 1
            self.gpu_seconds += batch.seconds
        else:
            self.cpu_batches += 1
            self.cpu_seconds += batch.seconds
            self.fallback_batches += batch.fallback


async def chunked(
    items: Iterable[T] | AsyncIterable[T], size: int, slots: asyncio.Semaphore
) -> AsyncIterator[list[T]]:
    """Lists of ``size`` items; each waits for a free slot before it starts filling."""
    await slots.acquire()
    batch: list[T] = []
    async for item in _aiter(items):
        batch.append(item)
        if len(batch) == size:
            yield batch
            await slots.acquire()
            batch = []
    if batch:
        yield batch


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
