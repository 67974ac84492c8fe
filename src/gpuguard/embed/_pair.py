"""A GPU embedder and a CPU embedder that must be interchangeable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .._events import Priority
from .._exceptions import DimensionMismatch
from ..guard import DEFAULT, Lease, Timeout
from ._lease import LeaseGuard
from ._protocol import Embedder

__all__ = ["EmbedderPair", "GpuLoadHook"]

GpuLoadHook = Callable[[Lease, Callable[[], Awaitable[int]]], Awaitable[int]]
"""Runs the GPU model's load (the callable; it returns the dimension) inside its lease."""

MODEL_LOAD_OPERATION = "embed-load"
"""The guard operation name of a GPU embedding-model load."""


class EmbedderPair:
    """The GPU embedder (optional) and the CPU embedder that stands in for it when busy.

    Both must give vectors of the same size, or the store would mix incompatible vectors:
    a mismatch is refused with :class:`DimensionMismatch` as early as it is known (at
    construction when both dimensions are declared, else when the GPU embedder loads).

    ``around_gpu_load``, when set (the gateway sets it), runs every leased load of the GPU
    model, whoever asks for it: it may make room first and measure the load.
    """

    def __init__(self, gpu: Embedder | None, cpu: Embedder) -> None:
        self.gpu = gpu
        self.cpu = cpu
        self._dimension: int | None = None
        self._gpu_ready = False
        self.around_gpu_load: GpuLoadHook | None = None
        if gpu is not None and gpu.dimension is not None and cpu.dimension is not None:
            _check(gpu.dimension, cpu.dimension)

    @property
    def dimension(self) -> int | None:
        """The vector size once the CPU embedder is loaded."""
        return self._dimension

    @property
    def name(self) -> str:
        """The model's name (the CPU embedder's, which every batch can fall back to)."""
        return self.cpu.name

    @property
    def gpu_ready(self) -> bool:
        """True once the GPU embedder is loaded and known to match the CPU one."""
        return self._gpu_ready

    async def start(self, guard: LeaseGuard | None = None) -> int:
        """Load both embedders (idempotent), check their dimensions, return the dimension."""
        dimension = await self.start_cpu()
        await self.load_gpu(guard)
        return dimension

    async def start_cpu(self) -> int:
        """Load the CPU embedder (idempotent) and return the dimension."""
        if self._dimension is None:
            self._dimension = await self.cpu.load()
        return self._dimension

    async def load_gpu(self, guard: LeaseGuard | None, *, hold_timeout: Timeout = DEFAULT) -> None:
        """Load the GPU embedder under ``guard`` at normal priority and check its dimension.

        Loading a model is GPU work too, so it waits its turn for the lease; bulk embedding
        runs on the CPU meanwhile rather than waiting for it.
        """
        if self.gpu is None or self._gpu_ready:
            return
        if self.gpu.loaded or guard is None:
            gpu_dim = await self.gpu.load()
        else:
            async with guard.hold(
                MODEL_LOAD_OPERATION,
                model=self.gpu.name,
                priority=Priority.NORMAL,
                hold_timeout=hold_timeout,
            ) as lease:
                gpu_dim = await self._load_held(lease, self.gpu)
        _check(gpu_dim, await self.start_cpu())
        self._gpu_ready = True

    async def _load_held(self, lease: Lease, gpu: Embedder) -> int:
        async def load() -> int:
            return await lease.run(gpu.load(), stop=gpu.abort)

        return await (load() if self.around_gpu_load is None else self.around_gpu_load(lease, load))

    async def unload_gpu(self, lease: Lease) -> None:
        """Free the GPU model as work of ``lease`` (it loads again on next use)."""
        if self.gpu is None or not self._gpu_ready:
            return
        self._gpu_ready = False
        await lease.run(self.gpu.aclose(), stop=self.gpu.abort)

    async def aclose(self) -> None:
        """Free both models."""
        if self.gpu is not None:
            await self.gpu.aclose()
        await self.cpu.aclose()
        self._dimension = None
        self._gpu_ready = False

    def __repr__(self) -> str:
        return f"EmbedderPair(gpu={self.gpu!r}, cpu={self.cpu!r})"


def _check(gpu_dim: int, cpu_dim: int) -> None:
    if gpu_dim != cpu_dim:
        raise DimensionMismatch(gpu_dim=gpu_dim, cpu_dim=cpu_dim)
