"""llama.cpp through llama-cpp-python, in a worker process: the default when no server is set.

The model lives in a supervised child process (:class:`~gpuguard.worker._process.WorkerProcess`),
so a hung or runaway llama.cpp can be stopped: :meth:`LlamaCppBackend.abort` kills the
process and the OS frees its memory, VRAM included. Load, chat, embeddings and unload all
cross the process boundary; chat tokens stream back with a bounded number in flight.
Every wait is bounded: a load past ``load_timeout_s``, or a token (or embedding) slower
than ``token_timeout_s``, kills the process, so no abandoned load or generation keeps
running behind the caller's back. After a kill or a crash, the next call starts a new
process and loads the model again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from .._exceptions import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
)
from ..worker import WorkerProcess
from ._llama_tokens import KIND, LlamaTokenizer, import_llama_cpp, llama_cpp_missing
from ._openai_chunks import decode_chunk
from ._protocol import (
    LLAMA_CPP_SAMPLERS,
    OPENAI_CHAT_PARAMETERS,
    BackendHealth,
    ChatChunk,
    ChatMessage,
    ChatOptions,
    LoadedModel,
    checked_options,
    complete_usage,
)

__all__ = ["LlamaCppBackend", "completion_arguments"]

_HOST = "gpuguard.llm._llama_host:LlamaHost"


class LlamaCppBackend:
    """One GGUF model run by llama.cpp in a worker process.

    ``model_name`` (default: the file's stem) is the name the gateway uses for it.
    ``n_gpu_layers`` is passed to ``llama_cpp.Llama`` (-1 offloads every layer).
    Embeddings work only with ``embedding=True``. ``load_timeout_s`` bounds the load and
    ``token_timeout_s`` the wait for each token (and for an embedding call); past either,
    the worker is killed. ``max_buffered_chunks`` bounds the tokens in flight.
    ``main_gpu`` pins the model to that GPU (llama.cpp's ``main_gpu``, ``split_mode`` none);
    ``None`` leaves llama.cpp to place it.
    """

    kind = KIND
    chat_parameters: frozenset[str] = OPENAI_CHAT_PARAMETERS | LLAMA_CPP_SAMPLERS - {"n_keep"}
    """``create_chat_completion`` takes every OpenAI option but ``n`` > 1, and llama.cpp's
    samplers (``repeat_last_n`` set on the model for the one request); not ``n_keep``."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_name: str | None = None,
        n_gpu_layers: int = -1,
        n_ctx: int = 4096,
        embedding: bool = False,
        load_timeout_s: float = 600.0,
        token_timeout_s: float = 120.0,
        max_buffered_chunks: int = 16,
        main_gpu: int | None = None,
    ) -> None:
        if n_ctx < 1 or load_timeout_s <= 0 or token_timeout_s <= 0 or max_buffered_chunks < 1:
            raise ConfigError(
                "llama-cpp: n_ctx and max_buffered_chunks must be >= 1 and the timeouts positive"
            )
        self._path = Path(model_path)
        self._name = model_name or self._path.stem
        self._n_ctx = n_ctx
        self._embedding = embedding
        self._load_timeout_s = load_timeout_s
        self._token_timeout_s = token_timeout_s
        self._worker = WorkerProcess(
            _HOST,
            (str(self._path), n_gpu_layers, n_ctx, embedding, main_gpu),
            name=f"llama-cpp:{self._name}",
            max_in_flight=max_buffered_chunks,
        )
        # Loaded as far as the gateway knows: a killed or crashed worker is restarted (and the
        # model reloaded) by the next call, until unload.
        self._wanted = False
        self._tokens = LlamaTokenizer(self._path, n_ctx=n_ctx, model=self._name)

    @property
    def model_name(self) -> str:
        """The name of the one model this backend serves."""
        return self._name

    @property
    def supports_embeddings(self) -> bool:
        """True when built with ``embedding=True``."""
        return self._embedding

    @property
    def worker(self) -> WorkerProcess:
        """The worker process the model runs in."""
        return self._worker

    def _check(self, model: str) -> None:
        if model != self._name:
            raise ModelNotFound(
                f"llama-cpp: this backend serves {self._name!r} ({self._path}), not {model!r}",
                backend=self.kind,
                model=model,
            )

    def _check_loaded(self, model: str) -> None:
        self._check(model)
        if not self._wanted:
            raise ModelNotLoaded(
                f"llama-cpp: {model!r} is not loaded; load it first", backend=self.kind, model=model
            )

    async def health(self) -> BackendHealth:
        """Up when llama-cpp-python imports and the model file exists."""
        try:
            import_llama_cpp()
        except BackendUnavailable as exc:
            return BackendHealth(ok=False, backend=self.kind, detail=str(exc))
        if not self._path.is_file():
            return BackendHealth(ok=False, backend=self.kind, detail=f"no file at {self._path}")
        state = f"loaded in pid {self._worker.pid}" if self._worker.alive else "not loaded"
        return BackendHealth(ok=True, backend=self.kind, detail=f"{self._path} ({state})")

    async def list_models(self) -> list[str]:
        """The one configured model."""
        return [self._name]

    async def loaded_models(self) -> list[LoadedModel]:
        """The model, once loaded (its worker may be restarting after an abort)."""
        if not self._wanted:
            return []
        details = {"path": str(self._path), "pid": self._worker.pid}
        return [LoadedModel(id=self._name, details=details)]

    async def _ensure_running(self, model: str) -> None:
        """Start the worker (loading the model) within the load timeout, or kill it."""
        try:
            async with asyncio.timeout(self._load_timeout_s):
                await self._worker.start()
        except TimeoutError as exc:
            raise BackendTimeout(
                f"llama-cpp: loading {self._path} took longer than {self._load_timeout_s}s; "
                "the loading process was killed",
                backend=self.kind,
                model=model,
            ) from exc
        except ImportError as exc:
            raise llama_cpp_missing(model) from exc
        except Exception as exc:
            raise ModelLoadFailed(
                f"llama-cpp: cannot load {self._path}: {exc}", backend=self.kind, model=model
            ) from exc

    async def load(self, model: str) -> None:
        """Start the worker process, which loads the model (with the configured GPU layers)."""
        self._check(model)
        if not self._path.is_file():
            raise ModelNotFound(
                f"llama-cpp: model file {self._path} does not exist",
                backend=self.kind,
                model=model,
            )
        await self._ensure_running(model)
        self._wanted = True

    async def unload(self, model: str) -> None:
        """Stop the worker process: the model and all its memory are freed."""
        self._check(model)
        self._wanted = False
        await self._worker.stop()

    async def abort(self, model: str) -> None:
        """Kill the worker process at once; the OS frees its memory (VRAM included).

        The model stays loaded as far as callers know: the next call restarts the worker and
        reloads it. Returns once the process is reaped; a no-op when it is not running.
        """
        self._check(model)
        await self._worker.kill()

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream ``create_chat_completion(stream=True)`` from the worker process.

        The prompt is measured with the model's own tokenizer first: one that does not
        fit the context raises :class:`ContextLengthExceeded`. The last chunk carries
        ``usage``.
        """
        self._check_loaded(model)
        options = checked_options(options, self.chat_parameters, backend=self.kind, model=model)
        arguments = completion_arguments(messages, options)
        prompt_tokens = await self._tokens.prompt_tokens(messages)
        self._require_room(model, prompt_tokens, options.max_tokens)
        await self._ensure_running(model)
        events = self._worker.stream("chat", arguments, item_timeout_s=self._token_timeout_s)
        answer: list[str] = []
        async with aclosing(events):
            try:
                async for event in events:
                    chunk = _to_chunk(event)
                    if chunk is None:
                        continue
                    answer.append(chunk.content)
                    if chunk.finish_reason is not None:
                        completion = await self._tokens.text_tokens("".join(answer))
                        chunk = replace(chunk, usage=complete_usage(prompt_tokens, completion))
                    yield chunk
            except Exception as exc:
                self._raise(exc, "generation", model)

    def _require_room(self, model: str, prompt_tokens: int, max_tokens: int | None) -> None:
        """Refuse a prompt (plus the tokens asked for) that does not fit the context."""
        wanted = prompt_tokens + (max_tokens or 1)
        if wanted > self._n_ctx:
            asked = f" + max_tokens {max_tokens}" if max_tokens else ""
            raise ContextLengthExceeded(
                "messages",
                f"are {prompt_tokens} tokens{asked}, more than the model's context of "
                f"{self._n_ctx} tokens (llama-cpp); shorten the conversation or raise the "
                "model's context size",
                backend=self.kind,
                model=model,
            )

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's tokens as llama.cpp will see them.

        Counted with the model's tokenizer alone, read in this process (no weights, no GPU
        memory), so counting never needs the GPU lease or the worker.
        """
        self._check(model)
        return await self._tokens.prompt_tokens(messages)

    def context_length(self, model: str) -> int | None:
        """The context size the model was (or will be) loaded with."""
        self._check(model)
        return self._n_ctx

    def _raise(self, exc: Exception, what: str, model: str) -> NoReturn:
        """Map what came out of the worker to the error tree."""
        if isinstance(exc, TimeoutError):
            raise BackendTimeout(
                f"llama-cpp: no {what} progress within {self._token_timeout_s}s; "
                "the worker process was killed",
                backend=self.kind,
                model=model,
            ) from exc
        if "exceed context window" in str(exc):
            raise ContextLengthExceeded(
                "messages",
                f"do not fit the model's context (llama-cpp: {exc})",
                backend=self.kind,
                model=model,
            ) from exc
        # A WorkerError (crash) or what llama.cpp raised; the cause keeps the details.
        raise BackendError(
            f"llama-cpp: {what} failed: {exc}", backend=self.kind, model=model
        ) from exc

    async def embeddings(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` (only with ``embedding=True``)."""
        self._check(model)
        if not self._embedding:
            raise BackendError(
                "llama-cpp: this backend was built without embedding=True; create "
                "LlamaCppBackend(..., embedding=True) to embed",
                backend=self.kind,
                model=model,
            )
        self._check_loaded(model)
        await self._ensure_running(model)
        try:
            vectors: list[list[float]] = await self._worker.call(
                "embed", list(texts), timeout_s=self._token_timeout_s
            )
        except Exception as exc:
            self._raise(exc, "embedding", model)
        return vectors

    async def aclose(self) -> None:
        """Free the model if loaded, and the tokenizer."""
        await self.unload(self._name)
        await self._tokens.aclose()

    def __repr__(self) -> str:
        state = f"loaded in pid {self._worker.pid}" if self._worker.alive else "not loaded"
        return f"LlamaCppBackend(model_path={str(self._path)!r}, {state})"


def completion_arguments(messages: Sequence[ChatMessage], options: ChatOptions) -> dict[str, Any]:
    """``create_chat_completion`` keyword arguments for ``options`` (already checked).

    llama-cpp-python calls the mirostat mode ``mirostat_mode``; ``repeat_last_n`` is no
    argument of it, and :class:`~gpuguard.llm._llama_host.LlamaHost` applies it.
    """
    asked = options.to_dict()
    if "mirostat" in asked:
        asked["mirostat_mode"] = asked.pop("mirostat")
    return {"messages": [m.to_dict() for m in messages], "stream": True, **asked}


def _to_chunk(event: Any) -> ChatChunk | None:
    """A chunk from the worker; its ``usage`` is counted here, with the model's tokenizer."""
    return decode_chunk(event, usage=None)
