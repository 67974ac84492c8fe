"""A deterministic in-memory embedder for tests and demos: feature hashing, no model."""

from __future__ import annotations

import hashlib
import re
import time
from typing import TYPE_CHECKING

import numpy as np

from .._intervals import IntervalRecorder
from ._local import LocalEmbedder

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["HashEmbedder"]

_TOKEN = re.compile(r"\w+")


class HashEmbedder(LocalEmbedder):
    """Embeds text by hashing its words into ``dimension`` buckets, then L2-normalising.

    Texts that share words get similar vectors, so search over it is meaningful enough for
    tests. Its dimension is declared up front (as a configured remote model's would be).
    ``delay_s`` simulates inference time per call (in a worker thread, like a real engine);
    ``recorder`` logs each call as GPU work when ``device`` is not ``cpu``.

    It has no real tokenizer; for token-array input its vocabulary is ``vocab_size`` ids, and
    id ``n`` stands for the word ``tok<n>`` (``[1, 2]`` decodes to ``"tok1 tok2"``), so a
    token array embeds exactly as that text does.
    """

    def __init__(
        self,
        *,
        name: str = "hash-embedder",
        dimension: int = 384,
        device: str = "cpu",
        delay_s: float = 0.0,
        recorder: IntervalRecorder | None = None,
        vocab_size: int = 30_522,
    ) -> None:
        if dimension < 1 or vocab_size < 1:
            raise ValueError("dimension and vocab_size must be >= 1")
        super().__init__(name=name, device=device)
        self._declared_dimension = dimension
        self._delay_s = delay_s
        self._recorder = recorder
        self._vocab_size = vocab_size
        self.calls = 0
        self.texts_embedded = 0
        self.aborts = 0
        """How many times :meth:`abort` was called."""

    @property
    def dimension(self) -> int:
        """Vector size (declared, so known before loading)."""
        return self._declared_dimension

    async def abort(self) -> None:
        """Count the call; like any in-thread engine, the running encode goes on to its end."""
        self.aborts += 1

    def _load_sync(self) -> int:
        return self._declared_dimension

    def _unload_sync(self) -> None:
        """Nothing to free."""

    def _vocab_size_sync(self) -> int:
        return self._vocab_size

    def _decode_sync(self, ids: list[list[int]]) -> list[str]:
        return [" ".join(f"tok{token}" for token in array) for array in ids]

    def _token_lengths_sync(self, texts: list[str]) -> list[int] | None:
        """Its tokens are words."""
        return [len(_TOKEN.findall(text.lower())) or 1 for text in texts]

    def _encode_sync(self, texts: list[str]) -> Vectors:
        if self._recorder is not None and self._device != "cpu":
            with self._recorder.record(f"embedder:{self._name}", "embed"):
                return self._compute(texts)
        return self._compute(texts)

    def _compute(self, texts: list[str]) -> Vectors:
        if self._delay_s:
            time.sleep(self._delay_s)
        out = np.zeros((len(texts), self._declared_dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()) or [text]:
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                bucket = value % self._declared_dimension
                out[row, bucket] += 1.0 if value & (1 << 63) else -1.0
        self.calls += 1
        self.texts_embedded += len(texts)
        return out
