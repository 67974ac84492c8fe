"""What a local embedder says of itself, whether it runs in a thread or a worker process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exceptions import EmbedderUnavailable, EmbeddingError

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["ModelOnDevice"]


class ModelOnDevice:
    """A named model on one device: its dimension once loaded, and the errors that name it.

    The shared half of :class:`~gpuguard.embed._local.LocalEmbedder` and
    :class:`~gpuguard.embed.ProcessEmbedder`, so that both describe themselves and fail in
    the same words.
    """

    def __init__(self, *, name: str, device: str) -> None:
        self._name = name
        self._device = device
        self._dimension: int | None = None

    @property
    def name(self) -> str:
        """The model's name."""
        return self._name

    @property
    def device(self) -> str:
        """``cuda``, ``mps`` or ``cpu``: where the model runs."""
        return self._device

    @property
    def dimension(self) -> int | None:
        """Vector size once loaded."""
        return self._dimension

    @property
    def loaded(self) -> bool:
        """True from a successful :meth:`load` until the model is freed; a killed worker reloads."""
        return self._dimension is not None

    def _no_vectors(self) -> Vectors:
        """The answer to an empty batch."""
        import numpy as np

        return np.zeros((0, self._dimension or 0), dtype=np.float32)

    def _load_failed(self, exc: Exception) -> EmbedderUnavailable:
        """The error of a load that failed with ``exc``."""
        return EmbedderUnavailable(
            f"cannot load embedding model {self._name!r} on {self._device}: {exc}"
        )

    def _embed_failed(self, texts: int, exc: Exception) -> EmbeddingError:
        """The error of a batch of ``texts`` texts that failed with ``exc``."""
        return EmbeddingError(
            f"{self._name!r} on {self._device} failed to embed {texts} text(s): {exc}"
        )
