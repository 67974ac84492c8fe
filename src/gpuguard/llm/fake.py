"""An in-memory :class:`~gpuguard.llm.LlmBackend` for tests and demos of the layers above."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from .._exceptions import BackendError, ModelNotFound, ModelNotLoaded
from .._intervals import IntervalRecorder
from ._protocol import BackendHealth, ChatChunk, ChatMessage, LoadedModel

__all__ = ["FakeBackend"]


class FakeBackend:
    """An in-memory backend that echoes the last user message word by word.

    It knows ``models`` and loads them instantly (or after ``load_delay_s``).
    Like Foundry Local 0.10+, chat on a model that is not loaded fails with
    :class:`ModelNotLoaded`. ``recorder`` logs load, unload and chat as GPU work.
    ``fail_next`` makes the next call raise the given error once.
    """

    kind = "fake"

    def __init__(
        self,
        models: Sequence[str] = ("fake-llm",),
        *,
        load_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        recorder: IntervalRecorder | None = None,
    ) -> None:
        self.models = list(models)
        self.loaded: set[str] = set()
        self.load_delay_s = load_delay_s
        self.token_delay_s = token_delay_s
        self.recorder = recorder if recorder is not None else IntervalRecorder()
        self.fail_next: BackendError | None = None
        self.calls: list[tuple[str, str]] = []

    @property
    def supports_embeddings(self) -> bool:
        """The fake has no embeddings endpoint."""
        return False

    def _check(self, call: str, model: str) -> None:
        self.calls.append((call, model))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if model not in self.models:
            raise ModelNotFound(f"unknown model {model!r}", backend=self.kind, model=model)

    async def health(self) -> BackendHealth:
        """Always up."""
        return BackendHealth(ok=True, backend=self.kind, detail="in-memory")

    async def list_models(self) -> list[str]:
        """The configured models."""
        return list(self.models)

    async def loaded_models(self) -> list[LoadedModel]:
        """The loaded models."""
        return [LoadedModel(id=m) for m in sorted(self.loaded)]

    async def load(self, model: str) -> None:
        """Mark ``model`` loaded after ``load_delay_s``."""
        self._check("load", model)
        with self.recorder.record(f"llm:{self.kind}", f"load {model}"):
            if self.load_delay_s:
                await asyncio.sleep(self.load_delay_s)
            self.loaded.add(model)

    async def unload(self, model: str) -> None:
        """Mark ``model`` unloaded."""
        self._check("unload", model)
        with self.recorder.record(f"llm:{self.kind}", f"unload {model}"):
            self.loaded.discard(model)

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Echo the last user message, one word per chunk."""
        self._check("chat", model)
        if model not in self.loaded:
            raise ModelNotLoaded(f"model {model!r} is not loaded", backend=self.kind, model=model)
        prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
        words = f"echo: {prompt}".split()[: max_tokens or None]
        with self.recorder.record(f"llm:{self.kind}", f"chat {model}"):
            for i, word in enumerate(words):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield ChatChunk(content=word if i == 0 else f" {word}", model=model)
        yield ChatChunk(content="", finish_reason="stop", model=model)

    async def embeddings(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Unsupported."""
        raise BackendError("the fake backend has no embeddings", backend=self.kind, model=model)

    async def aclose(self) -> None:
        """Nothing to close."""
