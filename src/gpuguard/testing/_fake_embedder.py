"""A deterministic in-memory embedder for tests and demos: feature hashing, no model."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Sequence

import numpy as np

from ..embed._protocol import Vectors
from ._intervals import IntervalRecorder

__all__ = ["HashEmbedder"]

_TOKEN = re.compile(r"\w+")


class HashEmbedder:
    """Embeds text by hashing its words into ``dimension`` buckets, then L2-normalising.

    Texts that share words get similar vectors, so search over it is meaningful enough for
    tests. ``delay_s`` simulates inference time per call (in a worker thread, like a real
    engine); ``recorder`` logs each call as GPU work when ``device`` is not ``cpu``.
    """

    def __init__(
        self,
        *,
        name: str = "hash-embedder",
        dimension: int = 384,
        device: str = "cpu",
        delay_s: float = 0.0,
        recorder: IntervalRecorder | None = None,
    ) -> None:
        if dimension < 1:
            raise ValueError("dimension must be >= 1")
        self._name = name
        self._dimension = dimension
        self._device = device
        self._delay_s = delay_s
        self._recorder = recorder
        self._loaded = False
        self.calls = 0
        self.texts_embedded = 0

    @property
    def name(self) -> str:
        """The model's name."""
        return self._name

    @property
    def device(self) -> str:
        """The device it pretends to run on."""
        return self._device

    @property
    def dimension(self) -> int:
        """Vector size."""
        return self._dimension

    @property
    def loaded(self) -> bool:
        """True once loaded."""
        return self._loaded

    async def load(self) -> int:
        """Nothing to load; returns the dimension."""
        self._loaded = True
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Hash ``texts`` into normalised vectors (in a worker thread)."""
        self._loaded = True
        return await asyncio.to_thread(self._embed_sync, list(texts))

    def _embed_sync(self, texts: list[str]) -> Vectors:
        if self._recorder is not None and self._device != "cpu":
            with self._recorder.record(f"embedder:{self._name}", "embed"):
                return self._compute(texts)
        return self._compute(texts)

    def _compute(self, texts: list[str]) -> Vectors:
        if self._delay_s:
            time.sleep(self._delay_s)
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()) or [text]:
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self._dimension] += 1.0 if value & (1 << 63) else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self.calls += 1
        self.texts_embedded += len(texts)
        normalised: Vectors = out / norms
        return normalised

    async def aclose(self) -> None:
        """Forget the loaded state."""
        self._loaded = False

    def __repr__(self) -> str:
        return (
            f"HashEmbedder(name={self._name!r}, dimension={self._dimension}, "
            f"device={self._device!r})"
        )
