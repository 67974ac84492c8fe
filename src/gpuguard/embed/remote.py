"""A remote embedding endpoint: OpenAI-compatible ``/v1/embeddings`` or Ollama ``/api/embed``.

Both APIs take ``{"model": ..., "input": [texts]}``. OpenAI answers
``{"data": [{"index": i, "embedding": [...]}, ...]}``; Ollama answers
``{"embeddings": [[...], ...]}``. Vectors are re-normalised here whatever the server does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import httpx
import numpy as np

from .._exceptions import ConfigError, EmbedderUnavailable, EmbeddingError
from ._tokens import no_tokenizer
from ._vectors import as_normalised_vectors

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["RemoteApi", "RemoteEmbedder"]

RemoteApi = Literal["openai", "ollama"]

_PROBE = "dimension probe"


class RemoteEmbedder:
    """Embeddings from a server over HTTP (httpx), with errors mapped to the gpuguard tree.

    ``url`` is the server's base address (``http://127.0.0.1:11434``; for ``openai`` a base
    ending in ``/v1`` is accepted too). Unreachable, timed out or "model not found" ->
    :class:`EmbedderUnavailable`; any other failure or malformed answer ->
    :class:`EmbeddingError`. ``dimension`` may be declared; otherwise :meth:`load` learns
    it by embedding one probe text. ``transport`` lets tests plug in a protocol double.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str,
        api: RemoteApi = "openai",
        api_key: str | None = None,
        timeout_s: float = 60.0,
        dimension: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if api not in ("openai", "ollama"):
            raise ConfigError(f"unknown remote embedding API {api!r}; use 'openai' or 'ollama'")
        self._url = url.rstrip("/")
        self._endpoint = _endpoint(self._url, api)
        self._model = model
        self._api: RemoteApi = api
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s)
        self._transport = transport
        self._dimension = dimension
        self._probed = False
        self._clients: set[httpx.AsyncClient] = set()  # one per request in flight

    @property
    def name(self) -> str:
        """The model's name on the server."""
        return self._model

    @property
    def device(self) -> str:
        """Always ``remote``."""
        return "remote"

    @property
    def dimension(self) -> int | None:
        """Vector size, declared or learnt by :meth:`load`."""
        return self._dimension

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` reached the server."""
        return self._probed

    async def load(self) -> int:
        """Check that the server answers for this model and learn the dimension."""
        if not self._probed:
            vectors = await self._post([_PROBE])
            self._check_dimension(vectors.shape[1])
            self._probed = True
        assert self._dimension is not None
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in one request; rows come back in input order, normalised."""
        batch = list(texts)
        if not batch:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        vectors = await self._post(batch)
        self._check_dimension(vectors.shape[1])
        self._probed = True
        return vectors

    async def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Refused (naming ``input``): the server's tokenizer is not reachable from here."""
        raise no_tokenizer(self._model)

    async def abort(self) -> None:
        """Close every request in flight (they fail with :class:`EmbeddingError`).

        The server sees the connection close; whether it then stops computing is its own
        business (Ollama and llama-server do).
        """
        for client in list(self._clients):
            await client.aclose()

    async def aclose(self) -> None:
        """Nothing is held between requests."""
        self._probed = False

    async def _post(self, texts: list[str]) -> Vectors:
        payload = {"model": self._model, "input": texts}
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, headers=self._headers
            ) as client:
                self._clients.add(client)
                try:
                    response = await client.post(self._endpoint, json=payload)
                finally:
                    self._clients.discard(client)
        except (httpx.ConnectError, httpx.TimeoutException) as exc:
            raise EmbedderUnavailable(
                f"embedding server {self._endpoint} unreachable: {exc!r}"
            ) from exc
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding request to {self._endpoint} failed: {exc!r}") from exc
        if response.status_code == 404:
            raise EmbedderUnavailable(
                f"{self._endpoint} does not serve model {self._model!r}: {response.text[:200]}"
            )
        if response.status_code >= 400:
            raise EmbeddingError(
                f"{self._endpoint} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            rows = _rows(response.json(), self._api)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise EmbeddingError(
                f"{self._endpoint} answered outside the {self._api} embeddings API: {exc!r}"
            ) from exc
        return as_normalised_vectors(rows, expected_rows=len(texts))

    def _check_dimension(self, dimension: int) -> None:
        if self._dimension is None:
            self._dimension = dimension
        elif dimension != self._dimension:
            raise EmbeddingError(
                f"{self._model!r} at {self._url} returned {dimension}-dimensional vectors, "
                f"expected {self._dimension}"
            )

    def __repr__(self) -> str:
        return f"RemoteEmbedder(url={self._url!r}, model={self._model!r}, api={self._api!r})"


def _endpoint(url: str, api: RemoteApi) -> str:
    if api == "ollama":
        return f"{url}/api/embed"
    return f"{url}/embeddings" if url.endswith("/v1") else f"{url}/v1/embeddings"


def _rows(body: Any, api: RemoteApi) -> list[list[float]]:
    if api == "ollama":
        return list(body["embeddings"])
    items = sorted(body["data"], key=lambda item: int(item["index"]))
    return [item["embedding"] for item in items]
