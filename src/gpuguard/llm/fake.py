"""An in-memory :class:`~gpuguard.llm.LlmBackend` for tests and demos of the layers above."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping, Sequence

from .._exceptions import BackendError, ContextLengthExceeded, ModelNotFound, ModelNotLoaded
from .._intervals import IntervalRecorder
from ._protocol import (
    BackendHealth,
    ChatChunk,
    ChatMessage,
    ChatOptions,
    LoadedModel,
    checked_options,
    complete_usage,
)

__all__ = ["FakeBackend"]


class FakeBackend:
    """An in-memory backend that echoes the last user message word by word.

    It knows ``models`` and loads them instantly (or after ``load_delay_s``).
    Like Foundry Local 0.10+, chat on a model that is not loaded fails with
    :class:`ModelNotLoaded`. ``recorder`` logs load, unload and chat as GPU work.
    ``fail_next`` makes the next call raise the given error once. ``sizes`` gives models a
    size in bytes, reported as their VRAM while loaded; ``chats`` keeps every chat's messages.

    One word is one token. It honours ``max_tokens`` (finish ``length``), ``stop`` (a
    word that ends the answer) and ``tools``: it calls the named tool (``tool_choice`` naming
    a function), the first one (``required``) or, left to choose (``auto`` or unset), the
    first whose name is a word of the prompt, with ``{"text": <prompt>}``, streamed in two
    argument pieces. Every other option in ``chat_parameters`` is accepted and recorded in
    :attr:`options`. ``context_length`` (words) refuses longer prompts. Calls named in ``hang``
    (``"load"``, ``"chat"``) block, as hung GPU work would, until :meth:`abort`; ``aborts``
    lists the models :meth:`abort` was called for.
    """

    kind = "fake"
    DEFAULT_PARAMETERS = frozenset(
        {"max_tokens", "temperature", "top_p", "seed", "stop", "tools", "tool_choice"}
    )

    def __init__(
        self,
        models: Sequence[str] = ("fake-llm",),
        *,
        load_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        recorder: IntervalRecorder | None = None,
        chat_parameters: frozenset[str] = DEFAULT_PARAMETERS,
        context_length: int | None = None,
        sizes: Mapping[str, int] | None = None,
    ) -> None:
        self.models = list(models)
        self.chat_parameters = chat_parameters
        self._context_length = context_length
        self.options: list[ChatOptions] = []
        self.loaded: set[str] = set()
        self.load_delay_s = load_delay_s
        self.token_delay_s = token_delay_s
        self.recorder = recorder if recorder is not None else IntervalRecorder()
        self.fail_next: BackendError | None = None
        self.calls: list[tuple[str, str]] = []
        self.sizes = dict(sizes or {})
        self.chats: list[list[ChatMessage]] = []
        self.hang: set[str] = set()
        self.aborts: list[str] = []
        self._aborted = asyncio.Event()

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

    async def _maybe_hang(self, call: str, model: str) -> None:
        """Block a call named in ``hang`` until :meth:`abort`, then fail as a cut request."""
        if call not in self.hang:
            return
        self._aborted.clear()
        await self._aborted.wait()
        raise BackendError(f"{call} of {model!r} was aborted", backend=self.kind, model=model)

    async def abort(self, model: str) -> None:
        """Record the call and end every hanging call (they raise :class:`BackendError`)."""
        self.aborts.append(model)
        self._aborted.set()

    async def health(self) -> BackendHealth:
        """Always up."""
        return BackendHealth(ok=True, backend=self.kind, detail="in-memory")

    async def list_models(self) -> list[str]:
        """The configured models."""
        return list(self.models)

    async def loaded_models(self) -> list[LoadedModel]:
        """The loaded models."""
        return [
            LoadedModel(id=m, vram_bytes=size, details={"size": size} if size else {})
            for m in sorted(self.loaded)
            for size in [self.sizes.get(m)]
        ]

    async def load(self, model: str) -> None:
        """Mark ``model`` loaded after ``load_delay_s``."""
        self._check("load", model)
        with self.recorder.record(f"llm:{self.kind}", f"load {model}"):
            await self._maybe_hang("load", model)
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
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Echo the last user message, one word per chunk (or call a tool, see above)."""
        self._check("chat", model)
        options = checked_options(options, self.chat_parameters, backend=self.kind, model=model)
        self.options.append(options)
        self.chats.append(list(messages))
        if model not in self.loaded:
            raise ModelNotLoaded(f"model {model!r} is not loaded", backend=self.kind, model=model)
        prompt_tokens = _words(messages)
        if self._context_length is not None and prompt_tokens >= self._context_length:
            raise ContextLengthExceeded(
                "messages",
                f"are {prompt_tokens} tokens, more than the context of {self._context_length}",
                backend=self.kind,
                model=model,
            )
        prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
        with self.recorder.record(f"llm:{self.kind}", f"chat {model}"):
            if _called_tool(options, prompt) is not None:
                async for chunk in self._call_tool(options, prompt, prompt_tokens, model):
                    yield chunk
                return
            words = f"echo: {prompt}".split()
            if options.stop:
                cut = next((i for i, w in enumerate(words) if w in options.stop), len(words))
                words = words[:cut]
            finish = "stop"
            if options.max_tokens is not None and options.max_tokens < len(words):
                words, finish = words[: options.max_tokens], "length"
            await self._maybe_hang("chat", model)
            for i, word in enumerate(words):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield ChatChunk(content=word if i == 0 else f" {word}", model=model)
        usage = complete_usage(prompt_tokens, len(words))
        yield ChatChunk(content="", finish_reason=finish, model=model, usage=usage)

    async def _call_tool(
        self, options: ChatOptions, prompt: str, prompt_tokens: int, model: str
    ) -> AsyncGenerator[ChatChunk, None]:
        name = _called_tool(options, prompt)
        arguments = json.dumps({"text": prompt})
        half = len(arguments) // 2
        first = {
            "index": 0,
            "id": "call_0",
            "type": "function",
            "function": {"name": name, "arguments": arguments[:half]},
        }
        rest = {"index": 0, "function": {"arguments": arguments[half:]}}
        yield ChatChunk(content="", model=model, tool_calls=(first,))
        yield ChatChunk(content="", model=model, tool_calls=(rest,))
        usage = complete_usage(prompt_tokens, len(arguments.split()))
        yield ChatChunk(content="", finish_reason="tool_calls", model=model, usage=usage)

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        """Words, the fake's tokens."""
        return _words(messages)

    def context_length(self, model: str) -> int | None:
        """The configured context length (words), if any."""
        return self._context_length

    async def embeddings(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Unsupported."""
        raise BackendError("the fake backend has no embeddings", backend=self.kind, model=model)

    async def aclose(self) -> None:
        """Nothing to close."""


def _words(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content.split()) for m in messages)


def _called_tool(options: ChatOptions, prompt: str) -> str | None:
    """The tool the fake calls: named, the first if required, or one the prompt names."""
    if not options.tools:
        return None
    choice = options.tool_choice
    if isinstance(choice, dict) or (choice is not None and not isinstance(choice, str)):
        return str(choice["function"]["name"])
    names = [str(tool["function"]["name"]) for tool in options.tools]
    if choice == "required":
        return names[0]
    if choice == "none":
        return None
    return next((name for name in names if name in prompt.split()), None)
