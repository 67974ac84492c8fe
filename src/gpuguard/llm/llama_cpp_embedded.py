"""llama.cpp in-process through llama-cpp-python: the default when no server is configured.

Every call into llama.cpp runs in a worker thread so the event loop never blocks. A chat
streams tokens from the worker through an asyncio queue with a bounded number of chunks
in flight; closing the iterator tells the worker to stop at the next token, and waits for
it, so the GPU is really free when the stream is closed. A worker that outlives its token
timeout (llama.cpp hung) cannot be killed: the stream fails at once, and the next call
waits for the worker (bounded again) before touching the model.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._exceptions import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    GpuGuardError,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
)
from .._work import in_thread
from ._protocol import (
    OPENAI_CHAT_PARAMETERS,
    BackendHealth,
    ChatChunk,
    ChatMessage,
    ChatOptions,
    LoadedModel,
    complete_usage,
    reject_unsupported,
)

__all__ = ["LlamaCppBackend", "completion_arguments"]

_KIND = "llama-cpp"
_END = object()


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailable(
            "llama-cpp: llama-cpp-python is not installed (pip install 'gpuguard[llamacpp]')",
            backend=_KIND,
        ) from exc
    return llama_cpp


class _Failed:
    """An exception raised in the worker, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class LlamaCppBackend:
    """One GGUF model run in-process by llama.cpp.

    ``model_name`` (default: the file's stem) is the name the gateway uses for it.
    ``n_gpu_layers`` is passed to ``llama_cpp.Llama`` (-1 offloads every layer).
    Embeddings work only with ``embedding=True``. ``load_timeout_s`` and
    ``token_timeout_s`` bound the load and the wait for each token; a worker thread cannot
    be killed, so on timeout the call fails at once and the thread finishes on its own.
    """

    kind = _KIND
    chat_parameters: frozenset[str] = OPENAI_CHAT_PARAMETERS
    """``create_chat_completion`` takes every OpenAI option but ``n`` > 1."""

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
    ) -> None:
        if n_ctx < 1 or load_timeout_s <= 0 or token_timeout_s <= 0 or max_buffered_chunks < 1:
            raise ConfigError(
                "llama-cpp: n_ctx and max_buffered_chunks must be >= 1 and the timeouts positive"
            )
        self._path = Path(model_path)
        self._name = model_name or self._path.stem
        self._n_gpu_layers = n_gpu_layers
        self._n_ctx = n_ctx
        self._embedding = embedding
        self._load_timeout_s = load_timeout_s
        self._token_timeout_s = token_timeout_s
        self._max_buffered = max_buffered_chunks
        self._llama: Any = None
        self._tokenizer: Any = None  # a vocab-only model, for counting before the load
        # llama.cpp contexts are not thread-safe: one call at a time.
        self._lock = asyncio.Lock()
        # A generation worker that outlived its stream's token timeout.
        self._straggler: asyncio.Future[None] | None = None

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """Hold the lock, after any straggling worker is done with the model."""
        async with self._lock:
            if self._straggler is not None:
                try:
                    async with asyncio.timeout(self._token_timeout_s):
                        await asyncio.shield(self._straggler)
                except TimeoutError as exc:
                    raise BackendTimeout(
                        "llama-cpp: an earlier generation is still running in llama.cpp",
                        backend=self.kind,
                        model=self._name,
                    ) from exc
                self._straggler = None
            yield

    @property
    def model_name(self) -> str:
        """The name of the one model this backend serves."""
        return self._name

    @property
    def supports_embeddings(self) -> bool:
        """True when built with ``embedding=True``."""
        return self._embedding

    def _check(self, model: str) -> None:
        if model != self._name:
            raise ModelNotFound(
                f"llama-cpp: this backend serves {self._name!r} ({self._path}), not {model!r}",
                backend=self.kind,
                model=model,
            )

    def _loaded(self, model: str) -> Any:
        self._check(model)
        if self._llama is None:
            raise ModelNotLoaded(
                f"llama-cpp: {model!r} is not loaded; load it first", backend=self.kind, model=model
            )
        return self._llama

    async def health(self) -> BackendHealth:
        """Up when llama-cpp-python imports and the model file exists."""
        try:
            _import_llama_cpp()
        except BackendUnavailable as exc:
            return BackendHealth(ok=False, backend=self.kind, detail=str(exc))
        if not self._path.is_file():
            return BackendHealth(ok=False, backend=self.kind, detail=f"no file at {self._path}")
        state = "loaded" if self._llama is not None else "not loaded"
        return BackendHealth(ok=True, backend=self.kind, detail=f"{self._path} ({state})")

    async def list_models(self) -> list[str]:
        """The one configured model."""
        return [self._name]

    async def loaded_models(self) -> list[LoadedModel]:
        """The model, once loaded."""
        if self._llama is None:
            return []
        return [LoadedModel(id=self._name, details={"path": str(self._path)})]

    def _build(self, *, vocab_only: bool = False) -> Any:
        llama_cpp = _import_llama_cpp()
        try:
            return llama_cpp.Llama(
                model_path=str(self._path),
                n_gpu_layers=0 if vocab_only else self._n_gpu_layers,
                n_ctx=self._n_ctx,
                embedding=self._embedding,
                verbose=False,
                **({"vocab_only": True} if vocab_only else {}),
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadFailed(
                f"llama-cpp: cannot load {self._path}: {exc}", backend=self.kind, model=self._name
            ) from exc

    async def load(self, model: str) -> None:
        """Build the model in a worker thread (with the configured GPU layers)."""
        self._check(model)
        if not self._path.is_file():
            raise ModelNotFound(
                f"llama-cpp: model file {self._path} does not exist",
                backend=self.kind,
                model=model,
            )
        async with self._exclusive():
            if self._llama is not None:
                return
            try:
                async with asyncio.timeout(self._load_timeout_s):
                    self._llama = await in_thread(self._build)
            except TimeoutError as exc:
                raise BackendTimeout(
                    f"llama-cpp: loading {self._path} took longer than {self._load_timeout_s}s",
                    backend=self.kind,
                    model=model,
                ) from exc

    async def unload(self, model: str) -> None:
        """Free the model (and its GPU memory)."""
        self._check(model)
        async with self._exclusive():
            llama, self._llama = self._llama, None
            if llama is not None:
                await in_thread(llama.close)

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream from ``create_chat_completion(stream=True)`` run in a worker thread.

        The prompt is measured with the model's own tokenizer first: one that does not
        fit the context raises :class:`ContextLengthExceeded`. The last chunk carries
        ``usage``.
        """
        self._check(model)
        options = options if options is not None else ChatOptions()
        reject_unsupported(options, self.chat_parameters, backend=self.kind, model=model)
        arguments = completion_arguments(messages, options)
        async with self._exclusive():
            llama = self._loaded(model)
            prompt_tokens = await in_thread(_prompt_tokens, llama, messages)
            self._require_room(model, prompt_tokens, options.max_tokens)
            stream = _ChatStream(
                lambda: llama.create_chat_completion(**arguments), self._max_buffered
            )
            timed_out = False
            answer: list[str] = []
            try:
                while (item := await self._next(stream, model)) is not _END:
                    chunk = _to_chunk(item)
                    if chunk is None:
                        continue
                    answer.append(chunk.content)
                    if chunk.finish_reason is not None:
                        completion = await in_thread(_text_tokens, llama, "".join(answer))
                        chunk = replace(chunk, usage=complete_usage(prompt_tokens, completion))
                    yield chunk
            except BackendTimeout:
                timed_out = True
                raise
            finally:
                worker = stream.stop()
                if timed_out:
                    self._straggler = worker  # hung in llama.cpp: the next call waits for it
                else:
                    await worker  # stops at the next token

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

        Before the model is loaded, its tokenizer alone is read from the file (no weights,
        no GPU memory), so counting never needs the GPU lease.
        """
        self._check(model)
        llama = self._llama
        if llama is None:
            if self._tokenizer is None:
                self._tokenizer = await in_thread(self._build, vocab_only=True)
            llama = self._tokenizer
        return await in_thread(_prompt_tokens, llama, messages)

    def context_length(self, model: str) -> int | None:
        """The context size the model was (or will be) loaded with."""
        self._check(model)
        return self._n_ctx

    async def _next(self, stream: _ChatStream, model: str) -> Any:
        """The worker's next chunk (or the end marker), within the token timeout."""
        try:
            async with asyncio.timeout(self._token_timeout_s):
                item = await stream.next()
        except TimeoutError as exc:
            raise BackendTimeout(
                f"llama-cpp: no token within {self._token_timeout_s}s",
                backend=self.kind,
                model=model,
            ) from exc
        if isinstance(item, _Failed):
            error: GpuGuardError
            if "exceed context window" in str(item.error):
                error = ContextLengthExceeded(
                    "messages",
                    f"do not fit the model's context (llama-cpp: {item.error})",
                    backend=self.kind,
                    model=model,
                )
            else:
                error = BackendError(
                    f"llama-cpp: generation failed: {item.error}", backend=self.kind, model=model
                )
            raise error from item.error
        return item

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
        async with self._exclusive():
            llama = self._loaded(model)
            answer = await in_thread(llama.create_embedding, list(texts))
        return [[float(x) for x in row["embedding"]] for row in answer["data"]]

    async def aclose(self) -> None:
        """Free the model if loaded, and the tokenizer."""
        await self.unload(self._name)
        tokenizer, self._tokenizer = self._tokenizer, None
        if tokenizer is not None:
            await in_thread(tokenizer.close)

    def __repr__(self) -> str:
        state = "loaded" if self._llama is not None else "not loaded"
        return f"LlamaCppBackend(model_path={str(self._path)!r}, {state})"


def completion_arguments(messages: Sequence[ChatMessage], options: ChatOptions) -> dict[str, Any]:
    """``create_chat_completion`` keyword arguments for ``options`` (already checked)."""
    arguments: dict[str, Any] = {"messages": [m.to_dict() for m in messages], "stream": True}
    for name in options.given():
        value = getattr(options, name)
        if name == "stop":
            value = list(value)
        elif name == "tools":
            value = [dict(tool) for tool in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        arguments[name] = value
    return arguments


def _prompt_tokens(llama: Any, messages: Sequence[ChatMessage]) -> int:
    """Tokens of the prompt llama-cpp-python builds: the GGUF's chat template, tokenized."""
    template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
    if not template:
        text = "\n".join(m.content for m in messages)
        return len(llama.tokenize(text.encode("utf-8"), add_bos=True, special=True))
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def special(token: int) -> str:
        return (
            "" if token < 0 else llama.detokenize([token], special=True).decode("utf-8", "replace")
        )

    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=special(llama.token_eos()),
        bos_token=special(llama.token_bos()),
    )
    wire: list[Any] = [m.to_dict() for m in messages]
    prompt = formatter(messages=wire)
    return len(
        llama.tokenize(
            prompt.prompt.encode("utf-8"), add_bos=not prompt.added_special, special=True
        )
    )


def _text_tokens(llama: Any, text: str) -> int:
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0


def _to_chunk(event: Any) -> ChatChunk | None:
    choices = event.get("choices") or []
    if not choices:
        return None
    choice = choices[0]
    delta = choice.get("delta") or {}
    content = delta.get("content") or ""
    tool_calls = tuple(delta.get("tool_calls") or ())
    logprobs = choice.get("logprobs")
    if not (content or tool_calls or logprobs) and choice.get("finish_reason") is None:
        return None  # the role-only opening delta, or an incomplete UTF-8 sequence
    return ChatChunk(
        content=content,
        finish_reason=choice.get("finish_reason"),
        model=event.get("model"),
        tool_calls=tool_calls,
        logprobs=logprobs,
    )


class _ChatStream:
    """Runs a blocking token iterator in a worker thread and hands its items to the loop.

    The worker may run at most ``max_buffered`` items ahead of the consumer (a semaphore of
    credits), so a slow consumer never makes memory grow. :meth:`stop` sets the stop flag
    and hands back a credit so a blocked worker wakes and returns.
    """

    def __init__(self, start: Callable[[], Iterator[Any]], max_buffered: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._credits = threading.Semaphore(max_buffered)
        self._stop = threading.Event()
        self._worker = self._loop.run_in_executor(None, self._produce, start)

    def _put(self, item: Any) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _produce(self, start: Callable[[], Iterator[Any]]) -> None:
        tokens: Iterator[Any] | None = None
        try:
            tokens = start()
            for item in tokens:
                self._credits.acquire()
                if self._stop.is_set():
                    break
                self._put(item)
        except Exception as exc:  # carried to the consumer, which raises it
            self._put(_Failed(exc))
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()  # stops llama.cpp's generator at once
            self._put(_END)

    async def next(self) -> Any:
        """The next item (a chunk dict, :class:`_Failed` or the end marker)."""
        item = await self._queue.get()
        self._credits.release()
        return item

    def stop(self) -> asyncio.Future[None]:
        """Tell the worker to stop at its next token; await the result to wait for it."""
        self._stop.set()
        self._credits.release()
        return self._worker
