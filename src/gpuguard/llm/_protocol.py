"""The one seam every LLM server sits behind: :class:`LlmBackend`, and its value types."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from .._exceptions import UnsupportedParameter

__all__ = [
    "LLAMA_CPP_SAMPLERS",
    "OPENAI_CHAT_PARAMETERS",
    "BackendHealth",
    "ChatChunk",
    "ChatMessage",
    "ChatOptions",
    "LlmBackend",
    "LoadedModel",
    "checked_options",
    "complete_usage",
    "reject_unsupported",
]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat turn: ``role`` is ``system``, ``user``, ``assistant`` or ``tool``.

    An assistant turn may carry ``tool_calls`` (OpenAI's shape, ``arguments`` a JSON
    string); a tool turn answers the call named by ``tool_call_id``.
    """

    role: str
    content: str
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    tool_call_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI wire shape."""
        wire: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            wire["tool_calls"] = [dict(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            wire["tool_call_id"] = self.tool_call_id
        return wire


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatOptions:
    """How to generate: every chat-completions parameter gpuguard forwards to a backend.

    A field at its default means "not asked for". Each backend names the fields it can
    honour (:attr:`LlmBackend.chat_parameters`) and rejects any other one that was asked
    for with :class:`~gpuguard.UnsupportedParameter`, so nothing is dropped silently.
    ``n`` above 1 is never supported (one answer per request).

    The fields after ``n`` are llama.cpp's own samplers, under llama-server's names
    (:data:`LLAMA_CPP_SAMPLERS`): Ollama's ``options`` and the extra fields that
    llama-server, vLLM and LM Studio take on their OpenAI routes. ``mirostat`` is the mode
    (0 off, 1 or 2), ``repeat_last_n`` the tokens the repeat penalty looks back over (-1:
    the whole context), ``n_keep`` the prompt tokens kept when the context shifts.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: Mapping[str, Any] | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    n: int = 1
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    n_keep: int | None = None

    def given(self) -> list[str]:
        """The names of the parameters asked for (not at their defaults), in field order."""
        asked = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value != spec.default:
                asked.append(spec.name)
        return asked

    def to_dict(self) -> dict[str, Any]:
        """The parameters asked for, in the OpenAI wire shape (plain lists and dicts).

        The one option mapping: OpenAI-compatible servers and llama-cpp-python take it as
        it is; Ollama renames what goes into its ``options`` object.
        """
        wire: dict[str, Any] = {}
        for name in self.given():
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = [dict(v) if isinstance(v, Mapping) else v for v in value]
            elif isinstance(value, Mapping):
                value = dict(value)
            wire[name] = value
        return wire


#: What an OpenAI-compatible server takes: every option but ``n`` > 1.
OPENAI_CHAT_PARAMETERS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
    }
)


#: llama.cpp's samplers beyond OpenAI's options, as llama-server's ``/v1/chat/completions``
#: takes them (embedded llama-cpp-python takes all but ``n_keep``).
LLAMA_CPP_SAMPLERS = frozenset(
    {
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "repeat_last_n",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "n_keep",
    }
)


def reject_unsupported(
    options: ChatOptions, supported: frozenset[str], *, backend: str, model: str
) -> None:
    """Raise :class:`UnsupportedParameter` for the first asked-for parameter not supported."""
    for name in options.given():
        if name not in supported:
            raise UnsupportedParameter(
                name, f"is not supported by the {backend} backend", backend=backend, model=model
            )


def checked_options(
    options: ChatOptions | None, supported: frozenset[str], *, backend: str, model: str
) -> ChatOptions:
    """``options`` (the defaults for ``None``) once :func:`reject_unsupported` passed them."""
    options = options if options is not None else ChatOptions()
    reject_unsupported(options, supported, backend=backend, model=model)
    return options


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """A piece of a streamed answer; the last chunk carries ``finish_reason``.

    ``tool_calls`` are OpenAI streaming deltas (each with ``index``; the first delta of a
    call has ``id``, ``type`` and the function's ``name``). ``logprobs`` is the OpenAI
    ``choices[].logprobs`` object of this piece, where the backend reports one.
    ``usage`` (``prompt_tokens``, ``completion_tokens``, ``total_tokens``) rides on the
    last chunk.
    """

    content: str
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, int] | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    logprobs: Mapping[str, Any] | None = None


def complete_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object, ``total_tokens`` included."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


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

    @property
    def chat_parameters(self) -> frozenset[str]:
        """The :class:`ChatOptions` fields :meth:`chat` honours; others are refused."""

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

    async def abort(self, model: str) -> None:
        """Stop the GPU work running for ``model`` now, as far as the server allows.

        Closes this backend's requests in flight, then asks the server to stop or unload
        where its API can (each backend's docstring, and docs/backends.md, say what it can),
        bounded by ``Timeouts.abort_s``. Never raises, also when there is nothing to stop.
        """

    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream an answer. Closing the iterator early stops generation.

        An asked-for option outside :attr:`chat_parameters` raises
        :class:`~gpuguard.UnsupportedParameter` before any generation; a prompt too long
        for the model's context raises :class:`~gpuguard.ContextLengthExceeded`.
        """

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's length in the model's tokens, or ``None`` when it cannot tell."""

    def context_length(self, model: str) -> int | None:
        """The model's context size in tokens, where the backend knows it."""

    async def embeddings(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` with ``model`` (raises BackendError where unsupported)."""

    async def aclose(self) -> None:
        """Release connections (and, in-process, the model)."""
