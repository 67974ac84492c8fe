"""Build every object behind the server and the CLI from :class:`~gpuguard.Settings`.

One place: the guard, the LLM backend, the embedders, the gateway, the vector store, the
bulk embedder, the job manager, and the retriever that chat requests use. Engines are
imported only when configured (sentence-transformers pulls in torch, which takes seconds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from .._events import Priority
from .._exceptions import ConfigError, GpuGuardError
from ..embed import BulkEmbedder, Embedder, choose_cpu_engine, create_embedder, create_embedder_pair
from ..gateway import (
    EmbeddingSizes,
    FootprintMeter,
    GatewayTimeouts,
    ModelGateway,
    Placement,
    ResidentModels,
)
from ..index import VectorStore, private_directory
from ..jobs import JobManager
from ..llm import LlmBackend
from ..settings import (
    DetectDevices,
    LlmSettings,
    ModelSettings,
    Settings,
    build_footprints,
    build_guards,
    detect_once,
    gpu_indices,
)
from ._catalog import ModelCatalog, ModelEntry
from ._context import Retriever, ServerContext
from ._idle_unload import IdleUnloader
from ._jobs import IndexingJobs

__all__ = [
    "Runtime",
    "build_gateway",
    "model_catalog",
    "model_gpus",
    "open_runtime",
    "store_retriever",
]

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
        stack.push_async_callback(gateway.gpus.aclose)
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


def build_gateway(settings: Settings, *, detect: DetectDevices | None = None) -> ModelGateway:
    """The guard, the LLM backend and the embedders, owned by one gateway.

    ``detect`` finds the GPU driver (NVML by default); it is asked once, for the footprints'
    meter, the GPUs and their guards alike.
    """
    limits = settings.guard
    found = detect_once(detect)
    book, meter = build_footprints(settings, detect=found)
    indices = gpu_indices(limits, found)
    pins = model_gpus(settings, indices)  # a wrong pin fails before any lease exists
    placement = Placement(pins)
    resident = ResidentModels()
    gpus = build_guards(
        limits,
        detect=found,
        footprints=book,
        indices=indices,
        resident=lambda index: placement.resident_on(resident, index, first=indices[0]),
    )
    timeouts = GatewayTimeouts(
        wait_s=limits.wait_timeout_s,
        chat_wait_s=limits.chat_wait_timeout_s,
        load_hold_s=limits.load_hold_timeout_s,
        chat_hold_s=limits.chat_hold_timeout_s,
        embed_hold_s=limits.embed_hold_timeout_s,
    )
    spec = settings.embeddings
    cpu_engine, cpu_model = spec.cpu_engine, spec.cpu_model
    if cpu_engine == "auto":
        choice = choose_cpu_engine(
            cpu_model, onnx_dirs=[settings.data_dir / "onnx" / Path(cpu_model).name]
        )
        logger.info("CPU embeddings run on %s (%s)", choice.engine, choice.reason)
        cpu_engine, cpu_model = choice.engine, choice.model or cpu_model
    placed = _gpu_embedder_devices(settings, indices)
    gpu, cpu = create_embedder_pair(
        spec.gpu_engine,
        cpu_engine,
        gpu_model=spec.gpu_model,
        cpu_model=cpu_model,
        gpu_device=placed[0][1],
        gpu_process=spec.gpu_process,
        url=spec.url,
    )
    gpu_index = placed[0][0] if gpu is not None else None
    if gpu is not None and spec.gpu_engine is not None:
        book.assign(gpu.name, engine=spec.gpu_engine)  # measured beside the LLM engine's
    return ModelGateway(
        _build_backend(settings, pins),
        model=settings.model_name,
        gpus=gpus,
        model_gpus=placement,
        gpu_embedder_gpu=gpu_index,
        more_gpu_embedders=_more_gpu_embedders(settings, placed[1:]),
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


def model_gpus(settings: Settings, indices: Sequence[int]) -> dict[str, int]:
    """The GPU each pinned model works on (``[models."NAME"] gpu``), by the backend's name.

    A GPU outside ``[guard] gpus`` is a :class:`~gpuguard.ConfigError`, at start-up. With
    several GPUs the embedded llama.cpp pins every other model to the first GPU: it fixes a
    model's GPUs when it builds the model's worker, and left alone it would spread the
    layers over every GPU while holding one GPU's lease.
    """
    pins = {}
    embedded = settings.llm.backend == "llama-cpp" and len(indices) > 1
    if embedded:
        pins[settings.model_name] = indices[0]
    for name, model in settings.models.items():
        if model.gpu is None:
            if embedded:
                pins[model.id or name] = indices[0]
            continue
        if model.gpu not in indices:
            listed = ", ".join(str(index) for index in indices)
            raise ConfigError(
                f'[models."{name}"] gpu = {model.gpu}: this server leases GPU(s) {listed} '
                "([guard] gpus)"
            )
        pins[model.id or name] = model.gpu
    return pins


def _gpu_embedder_devices(settings: Settings, indices: Sequence[int]) -> list[tuple[int, str]]:
    """Where the GPU embedder runs: (GPU index, device) for each copy, the main copy first.

    With one GPU, the device as configured (``auto`` is resolved in the embedder's worker,
    where the engine runs). With several, ``cuda`` or ``auto`` gets one copy per GPU
    (``cuda:<index>``: NVML counted NVIDIA GPUs), ``cuda:<N>`` runs on GPU N alone, and any
    other device (``mps``, a remote engine) works under the first GPU's lease.
    """
    device = settings.embeddings.gpu_device
    if len(indices) > 1 and device in ("cuda", "auto"):
        return [(index, f"cuda:{index}") for index in indices]
    if device.startswith("cuda:") and device[5:].isdigit() and int(device[5:]) in indices:
        return [(int(device[5:]), device)]
    return [(indices[0], device)]


def _more_gpu_embedders(
    settings: Settings, placed: Sequence[tuple[int, str]]
) -> dict[int, Embedder]:
    """The GPU embedder's further copies (several GPUs), by GPU index."""
    spec = settings.embeddings
    if spec.gpu_engine is None:
        return {}
    return {
        index: create_embedder(
            spec.gpu_engine,
            model=spec.gpu_model,
            device=device,
            url=spec.url,
            process=spec.gpu_process,
        )
        for index, device in placed
    }


def _build_backend(settings: Settings, pins: Mapping[str, int]) -> LlmBackend:
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
        main_gpus=pins,
    )


def _layers(model: ModelSettings, llm: LlmSettings) -> int:
    return model.gpu_layers if model.gpu_layers is not None else llm.n_gpu_layers
