"""The sentence-transformers engine on CUDA, Apple MPS or the CPU."""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, EmbedderUnavailable
from ._bundled import resolve_model
from ._local import LocalEmbedder

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["SentenceTransformerEmbedder"]

logger = logging.getLogger("gpuguard.embed")

_DEVICES = ("cuda", "mps", "cpu")


class SentenceTransformerEmbedder(LocalEmbedder):
    """A sentence-transformers model, encoded in a worker thread with normalised output.

    ``model`` is a local directory or a name; ``None`` (or ``all-MiniLM-L6-v2``) means
    ``sentence-transformers/all-MiniLM-L6-v2`` from the Hugging Face cache, else from the
    optional offline package (``gpuguard[offline-model]``). Models are only ever read from
    disk (``local_files_only``): nothing is downloaded at run time. ``device`` is checked
    honestly at construction: ``cuda`` or ``mps`` on a machine without one raises
    :class:`EmbedderUnavailable`.
    """

    def __init__(
        self, model: str | None = None, *, device: str = "cpu", batch_size: int = 32
    ) -> None:
        self._resolved = resolve_model(model)
        super().__init__(name=self._resolved.name, device=_check_torch_device(device))
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        self._batch_size = batch_size
        self._model: Any = None

    def _load_sync(self) -> int:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # Loads run in background workers of a server: a "Loading weights" bar is noise there.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        source, origin = self._resolved.source, self._resolved.origin
        logger.info("loading %s on %s from %s (%s)", self._name, self._device, origin, source)
        model = SentenceTransformer(source, device=self._device, local_files_only=True)
        # sentence-transformers 6 renamed the method; older versions only have the old name.
        size = getattr(model, "get_embedding_dimension", None)
        dimension = size() if size is not None else model.get_sentence_embedding_dimension()
        if not dimension:
            raise EmbedderUnavailable(f"{self._name!r} does not declare an embedding size")
        self._model = model
        return int(dimension)

    def _encode_sync(self, texts: list[str]) -> Vectors:
        vectors: Vectors = self._model.encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors

    def _vocab_size_sync(self) -> int:
        return len(self._model.tokenizer)

    def _decode_sync(self, ids: list[list[int]]) -> list[str]:
        texts: list[str] = self._model.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return texts

    def _token_lengths_sync(self, texts: list[str]) -> list[int] | None:
        encoded = self._model.tokenizer(
            texts, truncation=True, max_length=self._model.max_seq_length
        )["input_ids"]
        return [len(ids) for ids in encoded]

    def _unload_sync(self) -> None:
        self._model = None
        gc.collect()
        if self._device == "cuda":
            import torch

            torch.cuda.empty_cache()


def _check_torch_device(device: str) -> str:
    """``device`` if torch can use it here, else a clear error."""
    if device not in _DEVICES:
        raise ConfigError(f"unknown device {device!r}; expected one of {', '.join(_DEVICES)}")
    if device == "cpu":
        return device
    try:
        import torch
    except ImportError as exc:
        raise EmbedderUnavailable("sentence-transformers needs torch installed") from exc
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if not available:
        raise EmbedderUnavailable(
            f"device {device!r} is not available to torch on this machine; use device='cpu'"
        )
    return device
