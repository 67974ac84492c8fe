"""The model gateway: the one owner of the guard, the LLM backend and the embedders.

Every GPU operation goes through :attr:`ModelGateway.guard`:

=====================================  ===========================  =====================
operation                              lease                        if busy
=====================================  ===========================  =====================
prewarm (startup, model change)        ``hold``, normal             wait, emit status
load / unload                          ``hold``, normal             wait
chat (the whole stream)                ``hold``, interactive        wait, "Waiting for GPU"
rewarm (after RAG indexing)            ``hold``, normal             wait
GPU embedding model load               ``hold``, normal             wait, emit status
GPU embedding inference (use_gpu)      ``hold``, caller's priority  wait
embedding request (an API route)       by its size (below)          wait, or CPU if bulk
bulk embedding                         ``try_hold`` per batch       CPU fallback
=====================================  ===========================  =====================

An embedding request is scheduled by its size (:mod:`._embed_sizes`): a query is
interactive, a mid-size request normal, a large one goes through :attr:`ModelGateway.bulk`
at background priority per batch, falling back to the CPU whenever the GPU is busy.

Every piece of GPU work inside a lease runs as tracked work (:meth:`Lease.run`,
:meth:`Lease.stream`): the lease is held until the work has really stopped, whichever task
drives it, and a hung operation is stopped through its work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from .._events import ModelEvent, Priority
from .._exceptions import ConfigError, ModelNotLoaded
from ..embed._bulk import BulkEmbedder
from ..embed._pair import EmbedderPair
from ..embed._protocol import Embedder, Vectors
from ..guard import GpuGuard, GuardSnapshot, Hold, Lease
from ..llm._protocol import (
    BackendHealth,
    ChatChunk,
    ChatMessage,
    ChatOptions,
    LlmBackend,
    LoadedModel,
)
from ._embed_sizes import Embedded, EmbeddingSizes, EmbedSize

__all__ = ["GatewayStatus", "GatewayTimeouts", "GpuWaiting", "ModelGateway", "ModelInfo"]

logger = logging.getLogger("gpuguard.gateway")


@dataclass(frozen=True, slots=True)
class GatewayTimeouts:
    """How long each kind of GPU operation may wait for, and hold, the lease (seconds).

    ``None`` means no limit. Loads get long hold timeouts (Foundry Local can take minutes);
    a chat's hold timeout bounds the whole streamed answer.
    """

    wait_s: float | None = 600.0
    chat_wait_s: float | None = 120.0
    load_hold_s: float | None = 900.0
    unload_hold_s: float | None = 120.0
    chat_hold_s: float | None = 600.0
    embed_hold_s: float | None = 120.0


@dataclass(frozen=True, slots=True)
class GpuWaiting:
    """Yielded by :meth:`ModelGateway.chat` before it queues for a busy GPU."""

    operation: str
    holder: str | None
    queue_length: int

    @property
    def message(self) -> str:
        """What to show the user."""
        held = f" (held by {self.holder})" if self.holder else ""
        return f"Waiting for GPU...{held}"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the backend knows, and whether it is loaded and the gateway's current one."""

    id: str
    loaded: bool
    current: bool
    vram_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """What the status route and ``gpuguard status`` show."""

    backend: BackendHealth
    model: str | None
    loaded: list[LoadedModel]
    gpu: GuardSnapshot
    gpu_embedder: str | None
    cpu_embedder: str | None
    prewarming: bool = False
    errors: list[str] = field(default_factory=list)


class ModelGateway:
    """Owns the guard, the LLM backend and the embedders; every GPU operation is guarded.

    Args:
        backend: the LLM server or in-process runtime.
        model: the current LLM model (prewarmed by :meth:`start`).
        guard: the GPU lease (a new one with default settings if omitted).
        gpu_embedder / cpu_embedder: embedding engines of the same dimension; a GPU
            embedder needs a CPU one to fall back to (a mismatch raises DimensionMismatch).
        timeouts: per-operation wait and hold limits.
        chat_priorities: the lease priority of chats per model (interactive if not listed).
        embedding_sizes: how :meth:`embed_request` tells a query from bulk work.
        bulk_batch_size: texts per batch of bulk embedding (:attr:`bulk`).
    """

    def __init__(
        self,
        backend: LlmBackend,
        *,
        model: str | None = None,
        guard: GpuGuard | None = None,
        gpu_embedder: Embedder | None = None,
        cpu_embedder: Embedder | None = None,
        timeouts: GatewayTimeouts | None = None,
        chat_priorities: Mapping[str, Priority] | None = None,
        embedding_sizes: EmbeddingSizes | None = None,
        bulk_batch_size: int = 32,
    ) -> None:
        self.backend = backend
        self.model = model
        self.guard = guard if guard is not None else GpuGuard()
        self.events = self.guard.events
        if gpu_embedder is not None and cpu_embedder is None:
            raise ConfigError("a GPU embedder needs a CPU embedder to fall back to")
        self.embedders = None if cpu_embedder is None else EmbedderPair(gpu_embedder, cpu_embedder)
        self.gpu_embedder = gpu_embedder
        self.cpu_embedder = cpu_embedder
        self.timeouts = timeouts if timeouts is not None else GatewayTimeouts()
        self.chat_priorities = dict(chat_priorities or {})
        self.embedding_sizes = embedding_sizes if embedding_sizes is not None else EmbeddingSizes()
        # One pair for every path, so the GPU model loads once whoever uses it first.
        self.bulk = (
            None
            if self.embedders is None
            else BulkEmbedder(
                self.embedders,
                self.guard,
                batch_size=bulk_batch_size,
                hold_timeout=self.timeouts.embed_hold_s,
            )
        )
        """Bulk embedding over the gateway's embedders (indexing jobs, large requests)."""
        self._loaded: set[str] = set()
        self._prewarm_task: asyncio.Task[None] | None = None
        self._errors: list[str] = []

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Prewarm the current model in the background."""
        if self.model is not None:
            self.prewarm_in_background()

    async def aclose(self) -> None:
        """Stop a running prewarm, then close the backend and the embedders."""
        if self._prewarm_task is not None and not self._prewarm_task.done():
            self._prewarm_task.cancel()
            await asyncio.gather(self._prewarm_task, return_exceptions=True)
        await self.backend.aclose()
        if self.embedders is not None:
            await self.embedders.aclose()

    async def __aenter__(self) -> ModelGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- LLM model operations --------------------------------------------------------------------
    async def prewarm(self, model: str | None = None, *, operation: str = "prewarm") -> None:
        """Load ``model`` (default: the current one) under the lease so it is ready to chat."""
        name = self._model_or_default(model)
        async with self._hold(
            operation, name, Priority.NORMAL, self.timeouts.load_hold_s, self.timeouts.wait_s
        ) as lease:
            self._publish(name, "prewarming")
            await self._load_held(lease, name)
            self._publish(name, "ready")

    def prewarm_in_background(self, model: str | None = None) -> asyncio.Task[None]:
        """Start :meth:`prewarm` as a task; failures are logged and reported, never raised."""
        name = self._model_or_default(model)
        if self._prewarm_task is not None and not self._prewarm_task.done():
            self._prewarm_task.cancel()
        self._prewarm_task = asyncio.create_task(self._prewarm_quietly(name), name="prewarm")
        return self._prewarm_task

    async def _prewarm_quietly(self, model: str) -> None:
        try:
            await self.prewarm(model)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"prewarm of {model!r} failed: {exc}"
            self._errors.append(message)
            del self._errors[:-20]
            self._publish(model, "failed", detail=str(exc))
            logger.error("%s", message)

    async def set_model(self, model: str) -> asyncio.Task[None]:
        """Prewarm ``model`` in the background; it becomes the current one once it is loaded.

        A failed prewarm is reported like any background prewarm and leaves the current
        model as it was, so that chats never default to a model that cannot serve.
        """
        task = self.prewarm_in_background(model)

        def adopt(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and model in self._loaded:
                self.model = model

        task.add_done_callback(adopt)
        return task

    async def rewarm(self) -> None:
        """Re-warm the current model (after RAG indexing pushed it out)."""
        await self.prewarm(operation="rewarm")

    async def load(self, model: str) -> int:
        """Load ``model`` under the lease; returns how long the load took (nanoseconds)."""
        async with self._hold(
            "load", model, Priority.NORMAL, self.timeouts.load_hold_s, self.timeouts.wait_s
        ) as lease:
            return await self._load_held(lease, model)

    async def unload(self, model: str) -> None:
        """Unload ``model`` under the lease."""
        async with self._hold(
            "unload", model, Priority.NORMAL, self.timeouts.unload_hold_s, self.timeouts.wait_s
        ) as lease:
            self._publish(model, "unloading")
            try:
                await lease.run(self.backend.unload(model), stop=partial(self.backend.abort, model))
            except Exception as exc:
                self._publish(model, "failed", detail=str(exc))
                raise
            self._loaded.discard(model)
            self._publish(model, "unloaded")

    async def _load_held(self, lease: Lease, model: str) -> int:
        """Load ``model`` as work of ``lease``; returns how long it took (nanoseconds)."""
        self._publish(model, "loading")
        started = time.perf_counter_ns()
        try:
            await lease.run(self.backend.load(model), stop=partial(self.backend.abort, model))
        except Exception as exc:
            self._publish(model, "failed", detail=str(exc))
            raise
        took = time.perf_counter_ns() - started
        self._loaded.add(model)
        self._publish(model, "loaded")
        return took

    # --- chat ------------------------------------------------------------------------------------
    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        options: ChatOptions | None = None,
        on_load: Callable[[int], None] | None = None,
    ) -> AsyncGenerator[ChatChunk | GpuWaiting, None]:
        """Stream an answer, holding the lease (interactive) for the whole stream.

        Yields a :class:`GpuWaiting` first when the GPU is busy. The lease is released when
        the stream ends, fails, or the consumer closes the iterator (the client went away).
        The model is loaded first if it is not (Foundry Local 0.10+ does not auto-load);
        ``on_load`` is called with each such load's duration in nanoseconds (Ollama's
        ``load_duration``). ``options`` go to the backend as they are; one it cannot
        honour is refused there.
        """
        name = self._model_or_default(model)
        priority = self.chat_priorities.get(name, Priority.INTERACTIVE)
        hold = self._hold(
            "chat", name, priority, self.timeouts.chat_hold_s, self.timeouts.chat_wait_s
        )
        # Take the GPU or a place in its queue before yielding anything: a full queue raises
        # QueueFull here, before a server has sent its first byte.
        if await hold.reserve():
            notice = GpuWaiting("chat", self._holder_name(), self.guard.queue_length)
            logger.info("%s for chat on %s", notice.message, name)
            yield notice
        async with hold as lease:
            if name not in self._loaded:
                await self._load_for_chat(lease, name, on_load)
            for attempt in (1, 2):
                started = False
                try:
                    stream = self.backend.chat(name, messages, options)
                    stop = partial(self.backend.abort, name)
                    async with aclosing(lease.stream(stream, stop=stop)) as chunks:
                        async for chunk in chunks:
                            started = True
                            yield chunk
                    return
                except ModelNotLoaded:
                    # Evicted behind our back (a TTL, another client): reload once, retry.
                    if started or attempt == 2:
                        raise
                    self._loaded.discard(name)
                    await self._load_for_chat(lease, name, on_load)

    async def _load_for_chat(
        self, lease: Lease, model: str, on_load: Callable[[int], None] | None
    ) -> None:
        took = await self._load_held(lease, model)
        if on_load is not None:
            on_load(took)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        options: ChatOptions | None = None,
    ) -> str:
        """The whole answer of :meth:`chat` as one string."""
        parts = []
        async with aclosing(self.chat(messages, model=model, options=options)) as stream:
            async for item in stream:
                if isinstance(item, ChatChunk):
                    parts.append(item.content)
        return "".join(parts)

    # --- embeddings ------------------------------------------------------------------------------
    async def load_gpu_embedder(self) -> Embedder:
        """The GPU embedder, loaded under the lease (normal priority) on first use."""
        pair, embedder = self.embedders, self.gpu_embedder
        if pair is None or embedder is None:
            raise ConfigError("no GPU embedder is configured")
        if not pair.gpu_ready:
            self._publish(embedder.name, "loading")
            try:
                await pair.load_gpu(self.guard, hold_timeout=self.timeouts.load_hold_s)
            except Exception as exc:
                self._publish(embedder.name, "failed", detail=str(exc))
                raise
            self._publish(embedder.name, "loaded")
        return embedder

    async def embed(
        self,
        texts: Sequence[str],
        *,
        use_gpu: bool = True,
        priority: Priority = Priority.NORMAL,
    ) -> Vectors:
        """Embed ``texts``: on the GPU embedder under the lease, or on the CPU embedder.

        With ``use_gpu`` and no GPU embedder configured, the CPU embedder is used.
        """
        if use_gpu and self.gpu_embedder is not None:
            embedder = await self.load_gpu_embedder()
            async with self._hold(
                "embed", embedder.name, priority, self.timeouts.embed_hold_s, self.timeouts.wait_s
            ) as lease:
                return await lease.run(embedder.embed(texts), stop=embedder.abort)
        if self.cpu_embedder is None:
            raise ConfigError("no embedder is configured")
        return await self.cpu_embedder.embed(texts)

    async def embed_request(self, texts: Sequence[str]) -> Embedded:
        """Embed the texts of one API request, scheduled by its size (:attr:`embedding_sizes`).

        A query or a mid-size request takes the lease at interactive or normal priority; a
        bulk one streams through :attr:`bulk`, one background ``try_hold`` per batch, and
        runs any batch on the CPU while the GPU is busy, so it never makes a chat wait.
        The answer says how long this request spent loading the embedding model.
        """
        pair, bulk = self.embedders, self.bulk
        if pair is None or bulk is None:
            raise ConfigError("no embedder is configured")
        size = self.embedding_sizes.classify(texts)
        if size is not EmbedSize.BULK:
            load_ns = await self._load_embedder(pair, gpu=True)
            return Embedded(await self.embed(texts, priority=size.priority), size, load_ns)
        # The GPU model, if not loaded yet, loads in the background while batches run on
        # the CPU: only the CPU model's load is this request's to wait for.
        load_ns = await self._load_embedder(pair, gpu=False)
        rows = []
        async with bulk.embed_batches(texts, operation="embed-bulk") as run:
            async for batch in run:
                rows.append(batch.vectors)
        return Embedded(np.concatenate(rows), size, load_ns)

    async def _load_embedder(self, pair: EmbedderPair, *, gpu: bool) -> int:
        """Load the embedder a request will use if it is not loaded; the load's nanoseconds."""
        started = time.perf_counter_ns()
        if gpu and pair.gpu is not None:
            if pair.gpu_ready:
                return 0
            await self.load_gpu_embedder()
        else:
            if pair.cpu.loaded:
                return 0
            await pair.start_cpu()
        return time.perf_counter_ns() - started

    async def decode_tokens(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """The texts that arrays of the embedding model's own token ids stand for.

        Decoded by the CPU embedder's tokenizer (the GPU embedder runs the same model, and
        tokenizing needs no GPU, so no lease). Errors name ``input``: an id outside the
        vocabulary, or an engine without a tokenizer (:meth:`Embedder.decode`).
        """
        if self.cpu_embedder is None:
            raise ConfigError("no embedder is configured")
        return await self.cpu_embedder.decode(ids)

    # --- status ----------------------------------------------------------------------------------
    async def models(self) -> list[ModelInfo]:
        """Every model the backend knows, with its loaded state."""
        known = await self.backend.list_models()
        loaded = {m.id: m for m in await self.backend.loaded_models()}
        self._loaded = set(loaded)
        names = list(dict.fromkeys([*known, *loaded]))
        return [
            ModelInfo(
                id=name,
                loaded=name in loaded,
                current=name == self.model,
                vram_bytes=loaded[name].vram_bytes if name in loaded else None,
            )
            for name in names
        ]

    async def status(self) -> GatewayStatus:
        """Backend health, loaded models and the GPU lane, in one object."""
        health = await self.backend.health()
        loaded = await self.backend.loaded_models() if health.ok else []
        return GatewayStatus(
            backend=health,
            model=self.model,
            loaded=loaded,
            gpu=self.guard.snapshot(),
            gpu_embedder=None if self.gpu_embedder is None else self.gpu_embedder.name,
            cpu_embedder=None if self.cpu_embedder is None else self.cpu_embedder.name,
            prewarming=self._prewarm_task is not None and not self._prewarm_task.done(),
            errors=list(self._errors),
        )

    @property
    def prewarm_task(self) -> asyncio.Task[None] | None:
        """The background prewarm, if one was started."""
        return self._prewarm_task

    # --- helpers ---------------------------------------------------------------------------------
    def _hold(
        self,
        operation: str,
        model: str,
        priority: Priority,
        hold_s: float | None,
        wait_s: float | None,
    ) -> Hold:
        return self.guard.hold(
            operation, model=model, priority=priority, wait_timeout=wait_s, hold_timeout=hold_s
        )

    def _model_or_default(self, model: str | None) -> str:
        name = model or self.model
        if not name:
            raise ConfigError("no model given and no current model configured")
        return name

    def _holder_name(self) -> str | None:
        current = self.guard.current
        return None if current is None else current.label

    def _publish(self, model: str, status: str, *, detail: str = "") -> None:
        self.events.publish(
            ModelEvent(
                model=model,
                status=status,
                backend=self.backend.kind,
                timestamp=self.guard.clock.time(),
                detail=detail,
            )
        )

    def __repr__(self) -> str:
        return f"<ModelGateway backend={self.backend.kind!r} model={self.model!r} {self.guard!r}>"
