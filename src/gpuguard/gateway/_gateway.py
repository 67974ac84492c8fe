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

The gateway is a front over its parts: :mod:`._models` (prewarm, load, unload),
:mod:`._chat` (the streamed answer) and :mod:`._embeddings` (the embedders, requests by size),
which meet the guard through one :class:`~._lane.Lane`.

Every piece of GPU work inside a lease runs as tracked work (:meth:`Lease.run`,
:meth:`Lease.stream`): the lease is held until the work has really stopped, whichever task
drives it, and a hung operation is stopped through its work.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .._events import EventBus, Priority
from .._exceptions import ConfigError
from ..embed._bulk import BulkEmbedder
from ..embed._pair import EmbedderPair
from ..embed._protocol import Embedder
from ..embed._tokens import TokenMeaning
from ..guard import GpuGuard, GpuSet
from ..llm._protocol import ChatChunk, ChatMessage, ChatOptions, LlmBackend
from ._chat import Chats
from ._embed_sizes import Embedded, EmbeddingSizes
from ._embeddings import Embeddings
from ._eviction import attach_evictor
from ._footprints import FootprintMeter
from ._lane import Lane, Placement
from ._models import LlmModels
from ._resident import ResidentModels
from ._values import GatewayStatus, GatewayTimeouts, GpuWaiting, ModelInfo

if TYPE_CHECKING:
    from ..embed._protocol import Vectors

__all__ = ["ModelGateway"]


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
        token_arrays: what the ids of token-array embedding input mean: ``"openai"`` (the
            default: ``cl100k_base`` ids, as OpenAI's, LangChain's and LlamaIndex's clients
            send them) or ``"model"`` (ids of the embedding model's own tokenizer, vLLM's
            reading).
        max_loaded_models: how many LLM models may be loaded at once on each GPU (``None``:
            no bound); loading one more first unloads that GPU's least recently used, under
            the same lease.
        footprints: measures each model load on the GPU (LLM and GPU embedding models) and
            remembers it, for the budget policy and for the loaded models' reported memory
            (``None``: not measured); with it, a load that does not fit the budget first
            unloads idle models (:mod:`._eviction`).
        resident: the record of the models kept loaded, to share with the budget policy
            (``Budget(resident=...)``); a new one if omitted.
        gpus: one guard per GPU (:class:`~gpuguard.GpuSet`); ``guard`` is then its first,
            and must be left out or be that one. Default: ``guard`` alone.
        model_gpus: the GPU index each pinned model works on (its loads, unloads and chats
            take that GPU's lease); any other model is placed on the GPU with room at its
            first operation. An index outside ``gpus`` is a :class:`ConfigError`. A
            :class:`~._lane.Placement` is filled in as models are placed, for the budgets'
            per-GPU resident views.
        gpu_embedder_gpu: the GPU index ``gpu_embedder`` runs on (default: the first).
        more_gpu_embedders: GPU index to a GPU embedder of the same model on that GPU:
            embedding requests go to the GPU with room and bulk batches spread over them.
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
        token_arrays: TokenMeaning = "openai",
        max_loaded_models: int | None = None,
        footprints: FootprintMeter | None = None,
        gpus: GpuSet | None = None,
        model_gpus: Placement | Mapping[str, int] | None = None,
        gpu_embedder_gpu: int | None = None,
        more_gpu_embedders: Mapping[int, Embedder] | None = None,
        resident: ResidentModels | None = None,
    ) -> None:
        if gpus is not None and guard is not None and guard is not gpus.first:
            raise ConfigError("guard must be the first of gpus (or left out)")
        if gpus is None:
            gpus = GpuSet.single(guard if guard is not None else GpuGuard())
        self.backend = backend
        self.resident = resident if resident is not None else ResidentModels()
        self.gpus = gpus
        self.guard = gpus.first
        self.events: EventBus = self.guard.events
        self._timeouts = timeouts if timeouts is not None else GatewayTimeouts()
        lane = Lane(gpus, backend, model_gpus)
        self._embeddings = Embeddings(
            lane,
            self._timeouts,
            gpu=gpu_embedder,
            cpu=cpu_embedder,
            sizes=embedding_sizes if embedding_sizes is not None else EmbeddingSizes(),
            bulk_batch_size=bulk_batch_size,
            token_arrays=token_arrays,
            gpu_index=gpu_embedder_gpu,
            more_gpus=more_gpu_embedders,
            meter=footprints,
            resident=self.resident,
        )
        self._models = LlmModels(
            backend, lane, self._timeouts, model, max_loaded_models, footprints, self.resident
        )
        self._chats = Chats(backend, self._models, lane, self._timeouts, chat_priorities)
        if footprints is not None:
            attach_evictor(
                lane, footprints.book, self._models, self._embeddings, self._chats.priorities
            )

    # --- what it holds ---------------------------------------------------------------------------
    @property
    def model(self) -> str | None:
        """The current LLM model: the one chats and prewarms use when none is named."""
        return self._models.current

    @model.setter
    def model(self, model: str | None) -> None:
        self._models.current = model

    @property
    def timeouts(self) -> GatewayTimeouts:
        """The per-operation wait and hold limits."""
        return self._timeouts

    @property
    def chat_priorities(self) -> dict[str, Priority]:
        """The lease priority of chats per model (interactive if not listed)."""
        return self._chats.priorities

    @property
    def gpu_embedder(self) -> Embedder | None:
        """The GPU embedding engine, if one is configured."""
        return self._embeddings.gpu

    @gpu_embedder.setter
    def gpu_embedder(self, embedder: Embedder | None) -> None:
        self._embeddings.gpu = embedder

    @property
    def cpu_embedder(self) -> Embedder | None:
        """The CPU embedding engine (every GPU batch can fall back to it)."""
        return self._embeddings.cpu

    @property
    def embedders(self) -> EmbedderPair | None:
        """The GPU and CPU embedders as one pair, or None without a CPU embedder."""
        return self._embeddings.pair

    @property
    def bulk(self) -> BulkEmbedder | None:
        """Bulk embedding over the gateway's embedders (indexing jobs, large requests)."""
        return self._embeddings.bulk

    @property
    def embedding_sizes(self) -> EmbeddingSizes:
        """How :meth:`embed_request` tells a query from bulk work."""
        return self._embeddings.sizes

    @property
    def prewarm_task(self) -> asyncio.Task[None] | None:
        """The background prewarm, if one was started."""
        return self._models.prewarm_task

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Prewarm the current model in the background."""
        if self.model is not None:
            self.prewarm_in_background()

    async def aclose(self) -> None:
        """Stop a running prewarm, then close the backend and the embedders."""
        await self._models.stop_prewarm()
        await self.backend.aclose()
        await self._embeddings.aclose()

    async def __aenter__(self) -> ModelGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- LLM model operations --------------------------------------------------------------------
    async def prewarm(self, model: str | None = None, *, operation: str = "prewarm") -> None:
        """Load ``model`` (default: the current one) under the lease so it is ready to chat."""
        await self._models.prewarm(model, operation=operation)

    def prewarm_in_background(self, model: str | None = None) -> asyncio.Task[None]:
        """Start :meth:`prewarm` as a task; failures are logged and reported, never raised."""
        return self._models.prewarm_in_background(model)

    async def set_model(self, model: str) -> asyncio.Task[None]:
        """Prewarm ``model`` in the background; it becomes the current one once it is loaded.

        A failed prewarm is reported like any background prewarm and leaves the current
        model as it was, so that chats never default to a model that cannot serve.
        """
        return self._models.adopt_when_loaded(model)

    async def rewarm(self) -> None:
        """Re-warm the current model (after RAG indexing pushed it out)."""
        await self.prewarm(operation="rewarm")

    async def load(self, model: str) -> int:
        """Load ``model`` under the lease; returns how long the load took (nanoseconds)."""
        return await self._models.load(model)

    async def unload(self, model: str) -> None:
        """Unload ``model`` under the lease."""
        await self._models.unload(model)

    # --- chat ------------------------------------------------------------------------------------
    def chat(
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
        return self._chats.stream(messages, model, options, on_load)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        options: ChatOptions | None = None,
    ) -> str:
        """The whole answer of :meth:`chat` as one string."""
        return await self._chats.complete(messages, model, options)

    # --- embeddings ------------------------------------------------------------------------------
    async def load_gpu_embedder(self) -> Embedder:
        """The GPU embedder, loaded under the lease (normal priority) on first use."""
        return await self._embeddings.load_gpu()

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
        return await self._embeddings.embed(texts, use_gpu=use_gpu, priority=priority)

    async def embed_request(self, texts: Sequence[str]) -> Embedded:
        """Embed the texts of one API request, scheduled by its size (:attr:`embedding_sizes`).

        A query or a mid-size request takes the lease at interactive or normal priority; a
        bulk one streams through :attr:`bulk`, one background ``try_hold`` per batch, and
        runs any batch on the CPU while the GPU is busy, so it never makes a chat wait.
        The answer says how long this request spent loading the embedding model.
        """
        return await self._embeddings.embed_request(texts)

    async def decode_tokens(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """The texts that arrays of token ids stand for, read as ``token_arrays`` says.

        ``"openai"``: ``cl100k_base`` ids, decoded from the tables shipped offline;
        ``"model"``: the embedding model's own ids, decoded by the CPU embedder's tokenizer
        (the GPU embedder runs the same model). Tokenizing needs no GPU, so no lease. Ids
        that cannot be decoded for sure raise :class:`~gpuguard.InvalidRequest` naming
        ``input``.
        """
        return await self._embeddings.decode_tokens(ids)

    # --- status ----------------------------------------------------------------------------------
    async def models(self) -> list[ModelInfo]:
        """Every model the backend knows, with its loaded state."""
        return await self._models.infos()

    async def status(self) -> GatewayStatus:
        """Backend health, loaded models and the GPU lane, in one object."""
        health = await self.backend.health()
        reported = await self.backend.loaded_models() if health.ok else []
        loaded = [dataclasses.replace(m, vram_bytes=self._models.vram_bytes(m)) for m in reported]
        gpu, cpu = self.gpu_embedder, self.cpu_embedder
        snapshots = tuple(guard.snapshot() for guard in self.gpus)
        return GatewayStatus(
            backend=health,
            model=self.model,
            loaded=loaded,
            gpu=snapshots[0],
            gpus=snapshots,
            gpu_embedder=None if gpu is None else gpu.name,
            cpu_embedder=None if cpu is None else cpu.name,
            prewarming=self._models.prewarming,
            errors=list(self._models.errors),
        )

    def __repr__(self) -> str:
        return f"<ModelGateway backend={self.backend.kind!r} model={self.model!r} {self.guard!r}>"
