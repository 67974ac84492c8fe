"""Bulk embedding's batches: what comes out of a run, and its totals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ._protocol import Vectors

__all__ = ["BulkStats", "Device", "EmbeddedBatch"]

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
