"""Several GGUF models served in-process, each in its own worker when loaded.

:class:`LlamaCppModels` is one :class:`~gpuguard.llm.LlmBackend` over one
:class:`~gpuguard.llm.LlamaCppBackend` per model, routed by name, as Ollama and llama-swap
serve every model they know. Which of them stay loaded together is the gateway's decision
(``max_loaded``: it unloads one before loading another, under the lease); this class only
dispatches, so each model keeps its own worker process, context size and GPU layers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing

from .._exceptions import ConfigError, ModelNotFound
from ._llama_tokens import KIND
from ._protocol import BackendHealth, ChatChunk, ChatMessage, ChatOptions, LoadedModel
from .llama_cpp_embedded import LlamaCppBackend

__all__ = ["LlamaCppModels"]


class LlamaCppModels:
    """Every configured GGUF model behind one backend; each call goes to its model's engine.

    ``models`` maps each name to its :class:`LlamaCppBackend` (built with that name). They
    share one kind and one set of chat parameters, so a refusal reads the same for all.
    """

    kind = KIND
    chat_parameters: frozenset[str] = LlamaCppBackend.chat_parameters

    def __init__(self, models: Mapping[str, LlamaCppBackend]) -> None:
        if not models:
            raise ConfigError("llama-cpp: no model to serve")
        for name, engine in models.items():
            if engine.model_name != name:
                raise ConfigError(f"llama-cpp: {name!r} is served by {engine.model_name!r}")
        self._models = dict(models)

    @property
    def supports_embeddings(self) -> bool:
        """True when every model was built with ``embedding=True``."""
        return all(engine.supports_embeddings for engine in self._models.values())

    def engine(self, model: str) -> LlamaCppBackend:
        """The engine of ``model``; :class:`ModelNotFound` names the models served."""
        try:
            return self._models[model]
        except KeyError:
            raise ModelNotFound(
                f"llama-cpp: no model {model!r}; this server serves {sorted(self._models)}",
                backend=self.kind,
                model=model,
            ) from None

    async def health(self) -> BackendHealth:
        """Up when every model's engine is (the first that is not says why)."""
        for engine in self._models.values():
            health = await engine.health()
            if not health.ok:
                return health
        return BackendHealth(ok=True, backend=self.kind, detail=f"{len(self._models)} models")

    async def list_models(self) -> list[str]:
        """Every configured model, in the order of the settings."""
        return list(self._models)

    async def loaded_models(self) -> list[LoadedModel]:
        """The models whose engine is loaded."""
        return [m for engine in self._models.values() for m in await engine.loaded_models()]

    async def load(self, model: str) -> None:
        """Load ``model`` in its own worker process."""
        await self.engine(model).load(model)

    async def unload(self, model: str) -> None:
        """Stop ``model``'s worker process, freeing its memory."""
        await self.engine(model).unload(model)

    async def abort(self, model: str) -> None:
        """Kill ``model``'s worker process (see :meth:`LlamaCppBackend.abort`)."""
        await self.engine(model).abort(model)

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream ``model``'s answer; closing the iterator stops it."""
        chunks = self.engine(model).chat(model, messages, options)
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's length in ``model``'s tokens."""
        return await self.engine(model).count_tokens(model, messages)

    def context_length(self, model: str) -> int | None:
        """``model``'s context size."""
        return self.engine(model).context_length(model)

    async def embeddings(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Embed with ``model`` (one built with ``embedding=True``)."""
        return await self.engine(model).embeddings(model, texts)

    async def aclose(self) -> None:
        """Free every model."""
        for engine in self._models.values():
            await engine.aclose()

    def __repr__(self) -> str:
        return f"LlamaCppModels({sorted(self._models)})"
