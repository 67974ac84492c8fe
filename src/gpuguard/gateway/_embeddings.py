"""The gateway's embedders: GPU work under the lease, the CPU one beside it, requests by size.

An embedding request is scheduled by its size (:mod:`._embed_sizes`): a query is
interactive, a mid-size request normal, a large one goes through the bulk embedder at
background priority per batch, falling back to the CPU whenever the GPU is busy.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .._events import Priority
from .._exceptions import ConfigError
from ..embed._bulk import BulkEmbedder
from ..embed._openai_tokens import OpenAITokens
from ..embed._pair import EmbedderPair
from ..embed._protocol import Embedder
from ..embed._tokens import TOKEN_MEANINGS, TokenMeaning
from ..guard import Lease
from ._embed_sizes import Embedded, EmbeddingSizes, EmbedSize
from ._footprints import FootprintMeter, MeteredGuard
from ._lane import Lane
from ._resident import Resident, ResidentModels
from ._values import GatewayTimeouts

if TYPE_CHECKING:
    from ..embed._protocol import Vectors

__all__ = ["Embeddings"]


class Embeddings:
    """The GPU embedder (optional), the CPU one, their pair and the bulk embedder over it.

    One pair serves every path, so the GPU model loads once whoever uses it first. Each
    leased load of the GPU model (whoever asks for it: a request, the bulk embedder) runs
    ``make_room`` first when it is set, is measured by ``meter`` like an LLM load, and
    makes the model one of the ``resident`` ones until it is unloaded. With GPU embedders
    on several GPUs (``more_gpus``: GPU index to the embedder there, beside ``gpu`` on
    ``gpu_index``), a request's batch goes to the one with room and bulk work spreads over
    all of them before the CPU; only the main copy's load is measured and counted as
    resident. Every GPU batch, on whichever GPU, declares the memory a batch of the model is
    known to need and is measured there (:class:`~._footprints.MeteredGuard`).
    """

    def __init__(
        self,
        lane: Lane,
        timeouts: GatewayTimeouts,
        *,
        gpu: Embedder | None,
        cpu: Embedder | None,
        sizes: EmbeddingSizes,
        bulk_batch_size: int,
        token_arrays: TokenMeaning,
        gpu_index: int | None = None,
        more_gpus: Mapping[int, Embedder] | None = None,
        meter: FootprintMeter | None = None,
        resident: ResidentModels | None = None,
    ) -> None:
        if gpu is not None and cpu is None:
            raise ConfigError("a GPU embedder needs a CPU embedder to fall back to")
        if token_arrays not in TOKEN_MEANINGS:
            raise ConfigError(f"token_arrays must be one of {TOKEN_MEANINGS}, not {token_arrays!r}")
        self._openai_tokens = OpenAITokens() if token_arrays == "openai" else None
        self.gpu = gpu
        self.cpu = cpu
        self.sizes = sizes
        self.pair = None if cpu is None else EmbedderPair(gpu, cpu)
        self._lane = lane
        self.meter = meter
        main = lane.gpus.indices[0] if gpu_index is None else gpu_index
        self._main = main
        if gpu is not None:
            lane.placement.set(gpu.name, main)  # where the main copy is resident
        # The GPU embedders' pairs by GPU index, the main one first, and their GPUs' leases.
        self._pairs: dict[int, EmbedderPair] = {}
        if self.pair is not None:
            self._pairs[main] = self.pair
            for index, embedder in (more_gpus or {}).items() if gpu is not None else ():
                self._pairs.setdefault(index, EmbedderPair(embedder, self.pair.cpu))
        self._leases = {i: MeteredGuard(lane.gpus[i], i, meter) for i in self._pairs}
        self.bulk = (
            None
            if self.pair is None
            else BulkEmbedder(
                self.pair,
                self._leases[main],
                batch_size=bulk_batch_size,
                hold_timeout=timeouts.embed_hold_s,
                more_gpus=[(self._leases[i], pair) for i, pair in self._pairs.items() if i != main],
                by_room=self._names_by_room,
            )
        )
        self._timeouts = timeouts
        self.resident = resident if resident is not None else ResidentModels()
        self.make_room: Callable[[Lease, str], Awaitable[None]] | None = None
        if self.pair is not None:
            self.pair.around_gpu_load = self._around_gpu_load

    async def _around_gpu_load(self, lease: Lease, load: Callable[[], Awaitable[int]]) -> int:
        """The GPU model's load in its lease: room made first, then measured."""
        name = lease.model or ""  # the GPU model's name (EmbedderPair.load_gpu)
        if self.make_room is not None:
            await self.make_room(lease, name)
        dimension = 0

        async def run() -> None:
            nonlocal dimension
            dimension = await load()

        await (run() if self.meter is None else self.meter.measure(name, run, gpu=self._main))
        self.resident.add(name)
        return dimension

    def residents(self) -> list[Resident]:
        """The GPU embedding model if it is loaded (its unloads rank as normal priority)."""
        pair, gpu = self.pair, self.gpu
        if pair is None or gpu is None or not pair.gpu_ready:
            return []
        used = self.resident.last_used(gpu.name)
        return [Resident(gpu.name, Priority.NORMAL, used, self._unload)]

    async def _unload(self, lease: Lease, reason: str) -> None:
        pair, gpu = self.pair, self.gpu
        if pair is None or gpu is None:
            return
        self._lane.publish(gpu.name, "unloading", detail=reason)
        try:
            await pair.unload_gpu(lease)
        except Exception as exc:
            self._lane.publish(gpu.name, "failed", detail=str(exc))
            raise
        finally:
            self.resident.discard(gpu.name)
        self._lane.publish(gpu.name, "unloaded", detail=reason)

    def _names_by_room(self) -> list[str]:
        return [guard.name for guard in self._lane.gpus.by_room()]

    def _placed(self) -> tuple[MeteredGuard, EmbedderPair]:
        """The GPU with a GPU embedder and the most room (its lease), and that embedder's pair."""
        placed = [(self._leases[index], pair) for index, pair in self._pairs.items()]
        if len(placed) < 2:
            return placed[0]
        rank = {id(guard): place for place, guard in enumerate(self._lane.gpus.by_room())}
        return min(placed, key=lambda gpu: rank[id(gpu[0].guard)])

    async def load_gpu(self) -> Embedder:
        """The GPU embedder, loaded under the lease (normal priority) on first use."""
        if self.pair is None or self.gpu is None:
            raise ConfigError("no GPU embedder is configured")
        return await self._load_on(*self._placed())

    async def _load_on(self, guard: MeteredGuard, pair: EmbedderPair) -> Embedder:
        # The main GPU's embedder is ``gpu``, which the gateway lets callers replace.
        embedder = self.gpu if pair is self.pair else pair.gpu
        assert embedder is not None
        if not pair.gpu_ready:
            self._lane.publish(embedder.name, "loading")
            try:
                await pair.load_gpu(guard, hold_timeout=self._timeouts.load_hold_s)
            except Exception as exc:
                self._lane.publish(embedder.name, "failed", detail=str(exc))
                raise
            self._lane.publish(embedder.name, "loaded")
        return embedder

    async def embed(self, texts: Sequence[str], *, use_gpu: bool, priority: Priority) -> Vectors:
        """Embed on a GPU embedder under its GPU's lease (the GPU with room), or on the CPU."""
        if use_gpu and self.gpu is not None:
            guard, pair = self._placed()
            embedder = await self._load_on(guard, pair)
            timeouts = self._timeouts
            async with guard.batch_hold(
                "embed",
                model=embedder.name,
                priority=priority,
                wait_timeout=timeouts.wait_s,
                hold_timeout=timeouts.embed_hold_s,
            ) as lease:
                self.resident.used(embedder.name)
                return await lease.run(embedder.embed(texts), stop=embedder.abort)
        if self.cpu is None:
            raise ConfigError("no embedder is configured")
        return await self.cpu.embed(texts)

    async def embed_request(self, texts: Sequence[str]) -> Embedded:
        """Embed one API request's texts, scheduled by its size."""
        import numpy as np

        pair, bulk = self.pair, self.bulk
        if pair is None or bulk is None:
            raise ConfigError("no embedder is configured")
        size = self.sizes.classify(texts)
        if size is not EmbedSize.BULK:
            load_ns = await self._load_for_request(pair, gpu=True)
            vectors = await self.embed(texts, use_gpu=True, priority=size.priority)
            return Embedded(vectors, size, load_ns)
        # The GPU model, if not loaded yet, loads in the background while batches run on
        # the CPU: only the CPU model's load is this request's to wait for.
        load_ns = await self._load_for_request(pair, gpu=False)
        rows = []
        async with bulk.embed_batches(texts, operation="embed-bulk") as run:
            async for batch in run:
                rows.append(batch.vectors)
        return Embedded(np.concatenate(rows), size, load_ns)

    async def _load_for_request(self, pair: EmbedderPair, *, gpu: bool) -> int:
        """Load the embedder a request will use if it is not loaded; the load's nanoseconds."""
        started = time.perf_counter_ns()
        if gpu and pair.gpu is not None:
            if pair.gpu_ready:
                return 0
            await self.load_gpu()
        else:
            if pair.cpu.loaded:
                return 0
            await pair.start_cpu()
        return time.perf_counter_ns() - started

    async def decode_tokens(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Decode token arrays as ``cl100k_base`` ids, or with the CPU embedder's tokenizer."""
        if self._openai_tokens is not None:
            return await self._openai_tokens.decode(ids)
        if self.cpu is None:
            raise ConfigError("no embedder is configured")
        return await self.cpu.decode(ids)

    async def aclose(self) -> None:
        """Free the models."""
        for pair in self._pairs.values():
            if pair is not self.pair and pair.gpu is not None:
                await pair.gpu.aclose()
        if self.pair is not None:
            await self.pair.aclose()
            if self.gpu is not None:
                self.resident.discard(self.gpu.name)
