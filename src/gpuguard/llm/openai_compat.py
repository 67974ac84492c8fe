"""A plain OpenAI-compatible server, and the base of the ones that can load and unload.

Chat, embeddings and the HTTP client come from
:class:`~gpuguard.llm._openai_wire.OpenAIServerBase`; :class:`OpenAICompatBackend` adds a
fixed base URL and the ``/v1/models`` list. llama.cpp's ``llama-server``
(:mod:`.llama_server`), vLLM (:mod:`.vllm`) and LM Studio (:mod:`.lmstudio`) build on it,
each adding only how its server lists, loads and unloads models.
"""

from __future__ import annotations

import httpx

from .._exceptions import BackendError, ModelNotFound
from ._http import HttpClient
from ._openai_wire import OpenAIServerBase, list_model_ids
from ._protocol import BackendHealth, LoadedModel
from ._timeouts import Timeouts

__all__ = ["OpenAICompatBackend"]


class OpenAICompatBackend(OpenAIServerBase):
    """A plain OpenAI-compatible server (``python -m llama_cpp.server``, a proxy, ...).

    It serves the models ``/v1/models`` lists and cannot load or unload: :meth:`load`
    checks the model is served (:class:`ModelNotFound` otherwise) and :meth:`unload`
    raises :class:`BackendError`. :meth:`abort` can only close the requests in flight.
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key=api_key, timeouts=timeouts, transport=transport)
        self._connect(base_url)

    @property
    def http(self) -> HttpClient:
        """The client (always connected: the base URL is given)."""
        assert self._http is not None
        return self._http

    def _not_found(self, model: str, served: list[str]) -> ModelNotFound:
        return self.http.errors.fault(
            ModelNotFound,
            f"{self.http.base_url} does not serve {model!r} (it serves {served})",
            model=model,
        )

    async def health(self) -> BackendHealth:
        """``GET /v1/models`` with the short health timeout."""
        return await self.http.probe("/v1/models")

    async def list_models(self) -> list[str]:
        """The ids ``/v1/models`` lists."""
        return await list_model_ids(self.http)

    async def loaded_models(self) -> list[LoadedModel]:
        """A plain server has every model it lists in memory."""
        return [LoadedModel(id=model) for model in await self.list_models()]

    async def _require_served(self, model: str) -> None:
        served = await self.list_models()
        if model not in served:
            raise self._not_found(model, served)

    def _cannot_unload(self, model: str) -> BackendError:
        return self.http.errors.fault(
            BackendError,
            f"{self.http.base_url} has no unload API; stop the server to free its memory, or "
            "use llama-server's router mode, vLLM sleep mode or LM Studio",
            model=model,
        )

    async def load(self, model: str) -> None:
        """Check that ``model`` is served; there is nothing to load."""
        await self._require_served(model)

    async def unload(self, model: str) -> None:
        """Unsupported: a plain OpenAI-compatible server cannot unload."""
        raise self._cannot_unload(model)
