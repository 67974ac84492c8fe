"""The shared half of in-process engines: lazy, idempotent loading and threaded encoding."""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._exceptions import EmbeddingError
from ..guard import in_thread
from ._on_device import ModelOnDevice
from ._tokens import check_token_ids
from ._vectors import as_normalised_vectors

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["LocalEmbedder"]


class LocalEmbedder(ModelOnDevice, abc.ABC):
    """An in-process :class:`~gpuguard.embed.Embedder` whose library blocks.

    It loads and encodes in a worker thread so that the event loop keeps serving.

    Subclasses implement :meth:`_load_sync` (returning the dimension), :meth:`_encode_sync`,
    :meth:`_unload_sync`, and their tokenizer's :meth:`_vocab_size_sync` and
    :meth:`_decode_sync`; this class makes loading idempotent and concurrency-safe,
    maps library failures to :class:`~gpuguard.EmbedderUnavailable` and
    :class:`~gpuguard.EmbeddingError`, and normalises every output.
    """

    def __init__(self, *, name: str, device: str) -> None:
        super().__init__(name=name, device=device)
        # A thread lock, not an asyncio one: loading happens in worker threads, and one
        # embedder may serve several event loops (tests, CLI runs) in its lifetime.
        self._load_lock = threading.Lock()

    async def load(self) -> int:
        """Load the model in a worker thread (once) and return its dimension."""
        if self._dimension is not None:
            return self._dimension
        return await in_thread(self.load_blocking)

    def load_blocking(self) -> int:
        """Load the model (once) in the calling thread and return its dimension.

        The blocking half of :meth:`load`, for hosts that run the engine elsewhere (a worker
        process).
        """
        with self._load_lock:
            if self._dimension is None:
                try:
                    self._dimension = self._load_sync()
                except EmbeddingError:
                    raise
                except Exception as exc:
                    raise self._load_failed(exc) from exc
            return self._dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in order (loading first if needed); rows are L2-normalised."""
        await self.load()
        batch = list(texts)
        if not batch:
            return self._no_vectors()
        return await in_thread(self.embed_blocking, batch)

    def embed_blocking(self, texts: list[str]) -> Vectors:
        """Embed a non-empty, loaded batch in the calling thread; rows L2-normalised."""
        try:
            raw = self._encode_sync(texts)
        except Exception as exc:
            raise self._embed_failed(len(texts), exc) from exc
        return as_normalised_vectors(raw, expected_rows=len(texts))

    async def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """The texts of arrays of this model's token ids (loading first if needed).

        Ids outside the vocabulary raise :class:`~gpuguard.InvalidRequest` naming ``input``.
        """
        arrays = [list(array) for array in ids]
        check_token_ids(self._name, await in_thread(self.vocab_size_blocking), arrays)
        return await in_thread(self.decode_blocking, arrays)

    def vocab_size_blocking(self) -> int:
        """The tokenizer's vocabulary size (loading the model first if needed)."""
        self.load_blocking()
        return self._vocab_size_sync()

    def decode_blocking(self, ids: list[list[int]]) -> list[str]:
        """Decode arrays of ids already checked against the vocabulary, in the calling thread."""
        self.load_blocking()
        return self._decode_sync(ids)

    async def token_lengths(self, texts: Sequence[str]) -> list[int] | None:
        """How many tokens the model reads of each text (after truncation), loading first.

        ``None`` when the engine has no tokenizer to count with. Bulk embedding sorts by
        these counts, so that a batch pads little (sorting by characters, as
        ``SentenceTransformer.encode`` does, leaves 1.11 padded tokens per token on schema
        texts; by tokens, 1.01).
        """
        await self.load()
        return await in_thread(self._token_lengths_sync, list(texts))

    def _token_lengths_sync(self, texts: list[str]) -> list[int] | None:
        """The token count of each text (blocking); ``None`` without a tokenizer."""
        return None

    async def abort(self) -> None:
        """Nothing: a thread inside a C library cannot be stopped, so its work runs to its end.

        Run the engine in a worker process (:class:`~gpuguard.embed.ProcessEmbedder`) to make
        it killable.
        """

    async def aclose(self) -> None:
        """Drop the model and free its memory."""
        await in_thread(self.unload_blocking)

    def unload_blocking(self) -> None:
        """Free the model in the calling thread."""
        with self._load_lock:
            if self._dimension is not None:
                self._unload_sync()
                self._dimension = None

    @abc.abstractmethod
    def _load_sync(self) -> int:
        """Load the model (blocking) and return its dimension."""

    @abc.abstractmethod
    def _encode_sync(self, texts: list[str]) -> Vectors:
        """Encode a non-empty batch (blocking)."""

    @abc.abstractmethod
    def _unload_sync(self) -> None:
        """Forget the model (blocking)."""

    @abc.abstractmethod
    def _vocab_size_sync(self) -> int:
        """How many token ids the loaded model's tokenizer knows."""

    @abc.abstractmethod
    def _decode_sync(self, ids: list[list[int]]) -> list[str]:
        """The texts of arrays of valid token ids, special tokens left out (blocking)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, device={self._device!r})"
