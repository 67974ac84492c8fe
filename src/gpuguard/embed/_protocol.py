"""The seam every embedding engine sits behind: :class:`Embedder`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Vectors: TypeAlias = NDArray[np.float32]
    """A ``(n, dimension)`` float32 array of L2-normalised rows."""

__all__ = ["CountsTokens", "Embedder", "Vectors"]


def __getattr__(name: str) -> Any:
    """``Vectors`` at run time, made on first use: annotations need no numpy imported."""
    if name != "Vectors":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import numpy as np
    from numpy.typing import NDArray

    globals()["Vectors"] = vectors = NDArray[np.float32]
    return vectors


@runtime_checkable
class Embedder(Protocol):
    """An embedding model on one device.

    ``load`` and ``embed`` are coroutines; engines whose libraries block run them in a worker
    thread so that the event loop keeps serving. The embedder knows nothing of the guard:
    the gateway and the bulk embedder take the lease around GPU work.
    """

    @property
    def name(self) -> str:
        """The model's name."""

    @property
    def device(self) -> str:
        """``cuda``, ``mps``, ``cpu`` or ``remote``."""

    @property
    def dimension(self) -> int | None:
        """Vector size, known once loaded (or declared up front)."""

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` has succeeded."""

    async def load(self) -> int:
        """Load the model (idempotent) and return its dimension."""

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in order, loading first if needed; rows are L2-normalised."""

    async def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """The texts that arrays of this model's own token ids stand for, one per array.

        Token-array input (OpenAI's embeddings API) embeds these texts. An id outside the
        model's vocabulary raises :class:`~gpuguard.InvalidRequest` naming ``input``; an
        engine without a tokenizer here (a remote one) raises
        :class:`~gpuguard.UnsupportedParameter` naming ``input``. Tokenizing is CPU work:
        no GPU lease is needed, though a local engine loads its model first.
        """

    async def abort(self) -> None:
        """Stop the work running now, as far as the engine allows; never raises.

        An engine in a worker process kills it (the OS frees its memory, VRAM included; the
        next call starts a new one); a remote engine closes its requests; an in-thread engine
        cannot be stopped, so it does nothing and its work runs to its end.
        """

    async def aclose(self) -> None:
        """Free the model."""


@runtime_checkable
class CountsTokens(Protocol):
    """An embedder that can say how many tokens its model reads of each text."""

    async def token_lengths(self, texts: Sequence[str]) -> list[int] | None:
        """Each text's token count after truncation; ``None`` if it cannot count here."""
