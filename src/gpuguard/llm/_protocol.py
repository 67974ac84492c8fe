"""The one seam every LLM server sits behind: :class:`LlmBackend`, and its value types."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["BackendHealth", "ChatChunk", "ChatMessage", "LlmBackend", "LoadedModel"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat turn: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        """The OpenAI wire shape."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """A piece of a streamed answer; the last chunk carries ``finish_reason``."""

    content: str
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model a backend has in memory. ``vram_bytes`` where the server reports it."""

    id: str
    vram_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """Whether a backend answers, and what it says about itself."""

    ok: bool
    backend: str
    url: str | None = None
    detail: str = ""


@runtime_checkable
class LlmBackend(Protocol):
    """An LLM server (or in-process runtime) as the gateway sees it.

    Implementations map every failure to :class:`~gpuguard.BackendError` subclasses and
    bound every call with a timeout. None of them knows about the GPU guard: the gateway
    takes the lease around each call.
    """

    @property
    def kind(self) -> str:
        """``foundry``, ``ollama``, ``llama-server``, ``vllm``, ``lmstudio``, ``llama-cpp``..."""

    @property
    def supports_embeddings(self) -> bool:
        """True where :meth:`embeddings` works."""

    async def health(self) -> BackendHealth:
        """Ask the server whether it is up (short timeout; never raises for "down")."""

    async def list_models(self) -> list[str]:
        """Models the backend can load (its catalogue or local cache)."""

    async def loaded_models(self) -> list[LoadedModel]:
        """Models currently loaded."""

    async def load(self, model: str) -> None:
        """Load ``model`` and return once it can serve; loading a loaded model is a no-op."""

    async def unload(self, model: str) -> None:
        """Unload ``model`` and return once its memory is freed; a no-op if not loaded."""

    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream an answer. Closing the iterator early stops generation."""

    async def embeddings(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` with ``model`` (raises BackendError where unsupported)."""

    async def aclose(self) -> None:
        """Release connections (and, in-process, the model)."""
