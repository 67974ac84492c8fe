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
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from .._exceptions import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
)
from .._work import in_thread
from ._protocol import BackendHealth, ChatChunk, ChatMessage, LoadedModel

__all__ = ["LlamaCppBackend"]

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

    def _build(self) -> Any:
        llama_cpp = _import_llama_cpp()
        try:
            return llama_cpp.Llama(
                model_path=str(self._path),
                n_gpu_layers=self._n_gpu_layers,
                n_ctx=self._n_ctx,
                embedding=self._embedding,
                verbose=False,
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
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream from ``create_chat_completion(stream=True)`` run in a worker thread."""
        self._check(model)
        options: dict[str, Any] = {"messages": [m.to_dict() for m in messages], "stream": True}
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature
        async with self._exclusive():
            llama = self._loaded(model)
            stream = _ChatStream(
                lambda: llama.create_chat_completion(**options), self._max_buffered
            )
            timed_out = False
            try:
                while (item := await self._next(stream, model)) is not _END:
                    chunk = _to_chunk(item)
                    if chunk is not None:
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
            raise BackendError(
                f"llama-cpp: generation failed: {item.error}", backend=self.kind, model=model
            ) from item.error
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
        """Free the model if loaded."""
        await self.unload(self._name)

    def __repr__(self) -> str:
        state = "loaded" if self._llama is not None else "not loaded"
        return f"LlamaCppBackend(model_path={str(self._path)!r}, {state})"


def _to_chunk(event: Any) -> ChatChunk | None:
    choices = event.get("choices") or []
    if not choices:
        return None
    choice = choices[0]
    content = (choice.get("delta") or {}).get("content") or ""
    if not content and choice.get("finish_reason") is None:
        return None  # the role-only opening delta, or an incomplete UTF-8 sequence
    return ChatChunk(
        content=content, finish_reason=choice.get("finish_reason"), model=event.get("model")
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
