"""Helpers that every engine shares to honour the protocol's "float32, L2-normalised rows"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._exceptions import EmbeddingError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike

    from ._protocol import Vectors

__all__ = ["as_normalised_vectors"]


def as_normalised_vectors(data: ArrayLike, *, expected_rows: int) -> Vectors:
    """``data`` as a ``(expected_rows, dim)`` float32 array with unit-length rows.

    All-zero rows stay zero (they have no direction). Raises :class:`EmbeddingError` when
    the engine returned a different number of rows or something that is not a matrix.
    """
    import numpy as np

    array: np.ndarray[Any, np.dtype[np.float32]] = np.asarray(data, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != expected_rows:
        raise EmbeddingError(
            f"engine returned an array of shape {array.shape} for {expected_rows} text(s)"
        )
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(array / norms, dtype=np.float32)
