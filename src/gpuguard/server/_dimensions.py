"""Shortened embeddings: the ``dimensions`` field of both embedding APIs.

``/v1/embeddings`` and Ollama's ``/api/embed`` both take ``dimensions``; both keep the first
N values of each vector and renormalise them, as OpenAI's shortened embeddings do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exceptions import InvalidRequest

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["shorten"]


def shorten(vectors: NDArray[np.float32], dimensions: int | None) -> NDArray[np.float32]:
    """The first ``dimensions`` values of each row, renormalised to unit length.

    ``None`` leaves the vectors whole. More dimensions than the model has is an
    :class:`InvalidRequest` naming ``dimensions`` (a 400); all-zero rows stay zero.
    """
    import numpy as np

    if dimensions is None:
        return vectors
    have = vectors.shape[1]
    if dimensions > have:
        raise InvalidRequest("dimensions", f"= {dimensions} is more than this model's {have}")
    short = vectors[:, :dimensions]
    norms = np.linalg.norm(short, axis=1, keepdims=True)
    result: NDArray[np.float32] = (short / np.where(norms == 0, 1, norms)).astype(np.float32)
    return result
