"""One model for both roles: the CPU embedder reuses the GPU embedder's model on the same device.

Without a GPU the "GPU" embedder runs on the CPU, the very device of the CPU fallback: two
copies of one model (and of torch, in two processes) would serve one device. Built by
:func:`create_embedder_pair`, the CPU embedder is then the GPU embedder's own model:

* a GPU engine in this process whose device is the CPU serves as the CPU embedder too;
* a GPU engine in a worker process resolves its device there; the CPU embedder
  (:class:`SharedModelEmbedder`) asks the worker where it runs before it loads anything,
  and uses the worker's model when the answer is the CPU, else its own in-process copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._engines import LOCAL_ENGINES
from ._factory import create_embedder
from ._local import LocalEmbedder
from ._on_device import ModelOnDevice
from ._process import ProcessEmbedder
from ._protocol import CountsTokens, Embedder

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["SharedModelEmbedder", "create_embedder_pair"]


class SharedModelEmbedder(ModelOnDevice):
    """The CPU embedder beside a :class:`ProcessEmbedder` of the same engine and model.

    On first use it asks the worker where its model runs (the worker starts, the model is
    not loaded yet): on the CPU, the worker's model serves this role too; on a GPU, the
    model is built here from ``own`` (an in-process CPU engine). :meth:`abort` never kills
    the shared worker (the GPU role's abort does); :meth:`aclose` leaves it to its owner.
    """

    def __init__(self, worker: ProcessEmbedder, own: Callable[[], Embedder]) -> None:
        super().__init__(name=worker.name, device="cpu")
        self._worker = worker
        self._own_factory = own
        self._own: Embedder | None = None

    @property
    def shares_worker(self) -> bool | None:
        """True when the worker's model serves this role; None until it is known."""
        if self._own is not None:
            return False
        return True if self._worker.device == "cpu" else None

    async def _engine(self) -> Embedder:
        """The embedder that does this role's work: the worker's on the CPU, else our own."""
        if self._own is not None:
            return self._own
        if await self._worker.probe_device() == "cpu":
            return self._worker
        if self._own is None:  # checked again: a concurrent first call may have built it
            self._own = self._own_factory()
        return self._own

    async def load(self) -> int:
        """Load the model (the worker's or our own, once) and return its dimension."""
        self._dimension = await (await self._engine()).load()
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` on the CPU model, loading it first if needed."""
        engine = await self._engine()
        vectors = await engine.embed(texts)
        self._dimension = engine.dimension
        return vectors

    async def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """The texts of arrays of the model's token ids."""
        return await (await self._engine()).decode(ids)

    async def token_lengths(self, texts: Sequence[str]) -> list[int] | None:
        """Each text's token count where the engine counts here, else ``None``."""
        engine = await self._engine()
        if isinstance(engine, CountsTokens):
            return await engine.token_lengths(texts)
        return None

    async def abort(self) -> None:
        """Nothing for the shared worker (its GPU role aborts it); our own copy is aborted."""
        if self._own is not None:
            await self._own.abort()

    async def aclose(self) -> None:
        """Free our own copy; the shared worker is closed by the GPU role."""
        if self._own is not None:
            await self._own.aclose()
        self._dimension = None

    def __repr__(self) -> str:
        return f"SharedModelEmbedder({self._worker!r}, own={self._own!r})"


def create_embedder_pair(
    gpu_engine: str | None,
    cpu_engine: str,
    *,
    gpu_model: str | None,
    cpu_model: str | None,
    gpu_device: str = "auto",
    gpu_process: bool = True,
    url: str | None = None,
) -> tuple[Embedder | None, Embedder]:
    """The GPU embedder (None without ``gpu_engine``) and the CPU one.

    Each is built as :func:`create_embedder` builds it, with one model for both where they
    run the same model on the same device (see the module docstring): a local engine
    (``sentence-transformers``, ``fastembed``) and the same ``model`` for both.
    """
    gpu = None
    if gpu_engine is not None:
        gpu = create_embedder(
            gpu_engine, model=gpu_model, device=gpu_device, url=url, process=gpu_process
        )

    def own() -> Embedder:
        return create_embedder(cpu_engine, model=cpu_model, device="cpu", url=url)

    same = gpu_engine in LOCAL_ENGINES and (gpu_engine, gpu_model) == (cpu_engine, cpu_model)
    if gpu is None or not same:
        return gpu, own()
    if isinstance(gpu, ProcessEmbedder):
        return gpu, SharedModelEmbedder(gpu, own)
    if isinstance(gpu, LocalEmbedder) and gpu.device == "cpu":
        return gpu, gpu
    return gpu, own()
