from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuguard import EventBus, GpuGuard
from gpuguard.embed import BulkEmbedder, EmbedderPair
from gpuguard.index import VectorStore
from gpuguard.testing import HashEmbedder


@pytest.fixture
def events() -> EventBus:
    return EventBus(history_size=1000)


@pytest.fixture
def guard(events: EventBus) -> GpuGuard:
    return GpuGuard(events=events)


@pytest.fixture
def embedders() -> tuple[HashEmbedder, HashEmbedder]:
    """(gpu, cpu): hash embedders standing in for a GPU and a CPU engine."""
    return HashEmbedder(device="cuda", dimension=64), HashEmbedder(device="cpu", dimension=64)


@pytest.fixture
def bulk(guard: GpuGuard, embedders: tuple[HashEmbedder, HashEmbedder]) -> BulkEmbedder:
    return BulkEmbedder(EmbedderPair(*embedders), guard, batch_size=4)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    with VectorStore(tmp_path / "index.db") as opened:
        yield opened


@pytest.fixture
def texts_embedded(embedders: tuple[HashEmbedder, HashEmbedder]) -> Callable[[], int]:
    """How many texts the GPU and CPU embedders have embedded so far, together."""
    return lambda: sum(embedder.texts_embedded for embedder in embedders)
