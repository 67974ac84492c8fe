"""Build every object behind the server and the CLI from :class:`~gpuguard.Settings`.

One place: the guard, the LLM backend, the embedders, the gateway, the vector store, the
bulk embedder, the job manager, and the retriever that chat requests use. Engines are
imported only when configured (sentence-transformers pulls in torch, which takes seconds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from .._events import Priority
from .._exceptions import GpuGuardError
from ..embed import BulkEmbedder, choose_cpu_engine, create_embedder
from ..gateway import (
    EmbeddingSizes,
    FootprintMeter,
    GatewayTimeouts,
    ModelGateway,
    ResidentModels,
)
from ..index import VectorStore, private_directory
from ..jobs import JobManager
from ..llm import LlmBackend
from ..settings import LlmSettings, ModelSettings, Settings, build_footprints, build_guard
from ._catalog import ModelCatalog, ModelEntry
from ._context import Retriever, ServerContext
from ._idle_unload import IdleUnloader
from ._jobs import IndexingJobs

__all__ = ["Runtime", "build_gateway", "model_catalog", "open_runtime", "store_retriever"]

logger = logging.getLogger("gpuguard.server")


@dataclass(slots=True)
class Runtime:
    """The objects built from one :class:`Settings`, alive inside :func:`open_runtime`."""

    settings: Settings
    gateway: ModelGateway
    store: VectorStore
    bulk: BulkEmbedder
    jobs: IndexingJobs

    def context(self) -> ServerContext:
        """What the server's routes need."""
        retriever = store_retriever(self.gateway, self.store, self.settings.index.search_k)
        return ServerContext(
            self.gateway, retriever=retriever, jobs=self.jobs, models=model_catalog(self.settings)
        )


@asynccontextmanager
async def open_runtime(settings: Settings, *, start: bool = True) -> AsyncIterator[Runtime]:
    """Build everything, and close it all on the way out.

    The gateway is started (prewarm in the background) unless ``start`` is False.
    """
    async with AsyncExitStack() as stack:
        # The data dir holds the index (every indexed text) and models: owner-only first.
        await asyncio.to_thread(private_directory, settings.data_dir)
        # Building imports torch, may write the tiny model and opens SQLite: off the loop.
        gateway = await asyncio.to_thread(build_gateway, settings)
        stack.push_async_callback(gateway.guard.aclose)
        stack.push_async_callback(gateway.aclose)
        store = await asyncio.to_thread(_open_store, settings.store_path)
        stack.push_async_callback(asyncio.to_thread, store.close)
        # The gateway's bulk embedder: one GPU model, loaded once, whether by a request or
        # by an indexing job.
        bulk = gateway.bulk
        assert bulk is not None  # build_gateway always configures a CPU embedder
        manager = JobManager(
            events=gateway.events,
            max_running=settings.sources.max_running_jobs,
            max_queued=settings.sources.max_queued_jobs,
            max_queued_per_caller=settings.sources.max_queued_jobs_per_caller,
        )
        stack.push_async_callback(manager.aclose)
        jobs = IndexingJobs(
            manager,
            store=store,
            bulk=bulk,
            events=gateway.events,
            rewarm=gateway.rewarm,
            sources=settings.sources,
        )
        if start:
            await gateway.start()
            prewarm = _prewarm_the_rest(gateway, model_catalog(settings))
            stack.push_async_callback(_cancel, prewarm)
            ttls = {
                model.id or name: model.ttl_s
                for name, model in settings.models.items()
                if model.ttl_s is not None
            }
            if ttls:
                stack.push_async_callback(IdleUnloader(gateway, ttls).aclose)
        yield Runtime(settings, gateway, store, bulk, jobs)


def _open_store(path: Path) -> VectorStore:
    path.parent.mkdir(parents=True, exist_ok=True)
    return VectorStore(path)


def model_catalog(settings: Settings) -> ModelCatalog:
    """The ``[models]`` sections as the routes look names up."""
    return ModelCatalog(
        tuple(
            ModelEntry(
                name=name,
                backend_id=model.id or name,
                aliases=tuple(model.aliases),
                context_size=model.context_size,
                prewarm=model.prewarm,
            )
            for name, model in settings.models.items()
        )
    )


def _prewarm_the_rest(gateway: ModelGateway, catalog: ModelCatalog) -> asyncio.Task[None]:
    """Load every ``prewarm = true`` model besides the current one, one at a time."""

    async def run() -> None:
        for entry in catalog.entries:
            if entry.prewarm and entry.backend_id != gateway.model:
                try:
                    await gateway.prewarm(entry.backend_id)
                except GpuGuardError as exc:
                    logger.error("prewarm of %r failed: %s", entry.name, exc)

    return asyncio.create_task(run(), name="prewarm-models")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def store_retriever(gateway: ModelGateway, store: VectorStore, k: int) -> Retriever:
    """Embed the question (on the CPU embedder: one short text, no GPU lease) and search."""

    async def retrieve(question: str) -> list[str]:
        if not question.strip():
            return []
        vectors = await gateway.embed([question], use_gpu=False)
        hits = await asyncio.to_thread(store.search, vectors[0], k=k)
        return [hit.text for hit in hits]

    return retrieve


def build_gateway(settings: Settings) -> ModelGateway:
    """The guard, the LLM backend and the embedders, owned by one gateway."""
    limits = settings.guard
    book, meter = build_footprints(settings)
    resident = ResidentModels()
    guard = build_guard(limits, footprints=book, resident=resident)
    timeouts = GatewayTimeouts(
        wait_s=limits.wait_timeout_s,
        chat_wait_s=limits.chat_wait_timeout_s,
        load_hold_s=limits.load_hold_timeout_s,
        chat_hold_s=limits.chat_hold_timeout_s,
        embed_hold_s=limits.embed_hold_timeout_s,
    )
    spec = settings.embeddings
    gpu = None
    if spec.gpu_engine is not None:
        device = _resolve_device(spec.gpu_engine, spec.gpu_device)
        gpu = create_embedder(
            spec.gpu_engine,
            model=spec.gpu_model,
            device=device,
            url=spec.url,
            process=spec.gpu_process,
        )
        book.assign(gpu.name, engine=spec.gpu_engine)  # measured beside the LLM engine's
    cpu_engine, cpu_model = spec.cpu_engine, spec.cpu_model
    if cpu_engine == "auto":
        choice = choose_cpu_engine(
            cpu_model, onnx_dirs=[settings.data_dir / "onnx" / Path(cpu_model).name]
        )
        logger.info("CPU embeddings run on %s (%s)", choice.engine, choice.reason)
        cpu_engine, cpu_model = choice.engine, choice.model or cpu_model
    cpu = create_embedder(cpu_engine, model=cpu_model, device="cpu", url=spec.url)
    return ModelGateway(
        _build_backend(settings),
        model=settings.model_name,
        guard=guard,
        gpu_embedder=gpu,
        cpu_embedder=cpu,
        timeouts=timeouts,
        chat_priorities={
            model.id or name: Priority[model.priority.upper()]
            for name, model in settings.models.items()
        },
        embedding_sizes=EmbeddingSizes(
            query_max_texts=spec.query_max_texts,
            query_max_chars=spec.query_max_chars,
            bulk_above_texts=spec.bulk_above_texts,
            bulk_above_chars=spec.bulk_above_chars,
        ),
        bulk_batch_size=spec.batch_size,
        token_arrays=spec.token_arrays,
        max_loaded_models=settings.llm.loaded_models_bound,
        footprints=None if meter is None else FootprintMeter(book, meter),
        resident=resident,
    )


def _build_backend(settings: Settings) -> LlmBackend:
    llm = settings.llm
    if llm.backend == "fake":
        from ..llm.fake import FakeBackend

        configured = [model.id or name for name, model in settings.models.items()]
        return FakeBackend(list(dict.fromkeys([settings.model_name, *configured])))
    from ..llm._factory import create_backend

    model_path = None
    n_ctx = llm.n_ctx or 4096
    n_gpu_layers = llm.n_gpu_layers
    if llm.backend == "llama-cpp":
        embedded = settings.embedded_model
        if embedded is not None:
            n_ctx = embedded[1].context_size or n_ctx
            if embedded[1].gpu_layers is not None:
                n_gpu_layers = embedded[1].gpu_layers
        path = settings.model_path
        if path == settings.generated_model_path and not path.is_file():
            # The generated tiny model (meaningless output, 4096 tokens of context).
            from ..llm.tiny_model import write_tiny_gguf

            path.parent.mkdir(parents=True, exist_ok=True)
            write_tiny_gguf(path)
        model_path = str(path)
    more = {
        model.id or name: (str(model.path), model.context_size or n_ctx, _layers(model, llm))
        for name, model in settings.models.items()
        if llm.backend == "llama-cpp"
        and model.path is not None
        and (model.id or name) != settings.model_name
    }
    return create_backend(
        llm.backend,
        base_url=llm.base_url,
        model_path=model_path,
        model_name=settings.model_name,
        api_key=llm.api_key.get_secret_value() if llm.api_key else None,
        n_gpu_layers=n_gpu_layers,
        n_ctx=n_ctx,
        more_models=more,
    )


def _layers(model: ModelSettings, llm: LlmSettings) -> int:
    return model.gpu_layers if model.gpu_layers is not None else llm.n_gpu_layers


def _resolve_device(engine: str, device: str) -> str:
    """``auto``: the GPU torch can use (CUDA, then Apple MPS), else the CPU.

    Without a GPU the "GPU" embedder still runs under the lease, so the guard's behaviour
    (and the demo) is the same on every machine.
    """
    if device != "auto":
        return device
    if engine != "sentence-transformers":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"
