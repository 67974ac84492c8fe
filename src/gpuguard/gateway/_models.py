"""The LLM's model operations under the lease: prewarm, load, unload, and which are loaded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial

from .._events import Priority
from .._exceptions import ConfigError
from ..guard import Hold, Lease
from ..llm._protocol import LlmBackend, LoadedModel
from ._footprints import FootprintMeter
from ._lane import Lane
from ._resident import Resident, ResidentModels
from ._values import GatewayTimeouts, ModelInfo

__all__ = ["LlmModels"]

logger = logging.getLogger("gpuguard.gateway")

_KEPT_ERRORS = 20
"""How many background prewarm failures the status keeps (the newest)."""


class LlmModels:
    """Loads and unloads the backend's models, each under the lease at normal priority.

    ``current`` is the model chats default to; ``loaded`` the models known to be loaded
    (what this gateway loaded, corrected whenever the backend is asked); ``errors`` the
    newest failures of background prewarms, which are reported, never raised.

    ``max_loaded`` bounds the models loaded at once on each GPU (``None``: no bound), as
    Ollama's default bound grows with the GPUs. Loading one more on a GPU first unloads the
    least recently used other model of that GPU, in the same lease (a model on another GPU
    takes none of its memory, and unloading it would need that GPU's lease), as llama-swap
    swaps models and Ollama evicts them; a background prewarm of a model that is not the
    current one never unloads another: it is skipped (and logged), and the model loads on
    first use.

    With a ``meter``, every load is measured (this process's GPU memory before and after, on
    the GPU the model works on) and the footprint remembered for the budget policy
    (:mod:`._footprints`).

    ``resident`` records the loaded models and their recency, for the budget policy and the
    unloads; ``make_room``, when set, runs in each load's lease before the load
    (:class:`~._eviction.Evictor`: idle models unloaded while the load would not fit), and
    ``fits`` tells a background prewarm, which never unloads, whether to load at all.
    """

    def __init__(
        self,
        backend: LlmBackend,
        lane: Lane,
        timeouts: GatewayTimeouts,
        current: str | None,
        max_loaded: int | None = None,
        meter: FootprintMeter | None = None,
        resident: ResidentModels | None = None,
    ) -> None:
        if max_loaded is not None and max_loaded < 1:
            raise ConfigError(f"max_loaded_models must be at least 1, not {max_loaded}")
        self.current = current
        self.max_loaded = max_loaded
        self.loaded: set[str] = set()
        self.resident = resident if resident is not None else ResidentModels()
        self.make_room: Callable[[Lease, str], Awaitable[None]] | None = None
        self.fits: Callable[[Lease, str], bool] | None = None
        self.errors: list[str] = []
        self.prewarm_task: asyncio.Task[None] | None = None
        self._backend = backend
        self._lane = lane
        self._timeouts = timeouts
        self.meter = meter

    def name(self, model: str | None) -> str:
        """``model``, or the current one when it is not given."""
        name = model or self.current
        if not name:
            raise ConfigError("no model given and no current model configured")
        return name

    @property
    def prewarming(self) -> bool:
        """Whether a background prewarm is running."""
        return self.prewarm_task is not None and not self.prewarm_task.done()

    async def prewarm(self, model: str | None, *, operation: str) -> None:
        """Load ``model`` (default: the current one) under the lease, with status events."""
        name = self.name(model)
        background = operation == "prewarm" and name != self.current
        if background and self._full(name):
            logger.info(
                "not prewarming %r: %s models are loaded already on its GPU "
                "(max_loaded_models); it loads on first use",
                name,
                len(self._beside(name)),
            )
            return
        async with self._hold(operation, name, self._timeouts.load_hold_s) as lease:
            if background and self.fits is not None and not self.fits(lease, name):
                logger.info(
                    "not prewarming %r: it does not fit beside the models loaded (budget); "
                    "it loads on first use",
                    name,
                )
                return
            self._lane.publish(name, "prewarming")
            await self.load_held(lease, name)
            self._lane.publish(name, "ready")

    def prewarm_in_background(self, model: str | None) -> asyncio.Task[None]:
        """Start :meth:`prewarm` as a task (cancelling one still running)."""
        name = self.name(model)
        if self.prewarm_task is not None and not self.prewarm_task.done():
            self.prewarm_task.cancel()
        self.prewarm_task = asyncio.create_task(self._prewarm_quietly(name), name="prewarm")
        return self.prewarm_task

    async def _prewarm_quietly(self, model: str) -> None:
        try:
            await self.prewarm(model, operation="prewarm")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"prewarm of {model!r} failed: {exc}"
            self.errors.append(message)
            del self.errors[:-_KEPT_ERRORS]
            self._lane.publish(model, "failed", detail=str(exc))
            logger.error("%s", message)

    def adopt_when_loaded(self, model: str) -> asyncio.Task[None]:
        """Prewarm ``model`` in the background; it becomes ``current`` once it is loaded."""
        task = self.prewarm_in_background(model)

        def adopt(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and model in self.loaded:
                self.current = model

        task.add_done_callback(adopt)
        return task

    async def stop_prewarm(self) -> None:
        """Cancel a running background prewarm and wait for it to end."""
        if self.prewarm_task is not None and not self.prewarm_task.done():
            self.prewarm_task.cancel()
            await asyncio.gather(self.prewarm_task, return_exceptions=True)

    async def load(self, model: str) -> int:
        """Load ``model`` under the lease; how long the load took (nanoseconds)."""
        async with self._hold("load", model, self._timeouts.load_hold_s) as lease:
            return await self.load_held(lease, model)

    async def unload(self, model: str) -> None:
        """Unload ``model`` under the lease."""
        async with self._hold("unload", model, self._timeouts.unload_hold_s) as lease:
            await self.unload_held(lease, model)

    async def unload_held(self, lease: Lease, model: str, reason: str = "") -> None:
        """Unload ``model`` as work of ``lease``; ``reason`` goes with its events."""
        self._lane.publish(model, "unloading", detail=reason)
        try:
            await lease.run(self._backend.unload(model), stop=partial(self._backend.abort, model))
        except Exception as exc:
            self._lane.publish(model, "failed", detail=str(exc))
            raise
        self.loaded.discard(model)
        self.resident.discard(model)
        self._lane.publish(model, "unloaded", detail=reason)

    def used(self, model: str) -> None:
        """Note that ``model`` served a request now (it is the last to be unloaded)."""
        self.resident.used(model)

    def residents(self, priorities: Mapping[str, Priority]) -> list[Resident]:
        """The loaded models, each with its chats' priority (interactive if not listed)."""
        return [
            Resident(
                name,
                priorities.get(name, Priority.INTERACTIVE),
                self.resident.last_used(name),
                partial(self._unload_for_room, name),
            )
            for name in self.loaded
        ]

    async def _unload_for_room(self, model: str, lease: Lease, reason: str) -> None:
        await self.unload_held(lease, model, reason)

    def _full(self, model: str) -> bool:
        """Whether loading ``model`` needs another model of its GPU unloaded first."""
        if self.max_loaded is None or model in self.loaded:
            return False
        return len(self._beside(model)) >= self.max_loaded

    def _beside(self, model: str) -> set[str]:
        """The other loaded models on the GPU ``model`` works on (or would be placed on now).

        A loaded model not placed yet (loaded before this gateway asked) counts on the first
        GPU, as that GPU's budget counts it. Nothing is placed here, so a prewarm skipped for
        want of room does not fix its model's GPU.
        """
        placement, gpus = self._lane.placement, self._lane.gpus
        index = placement.get(model)
        if index is None:
            index = gpus.index_of(gpus.place())
        on_gpu = placement.resident_on(self.loaded, index, first=gpus.indices[0])
        return set(on_gpu) - {model}

    async def load_held(self, lease: Lease, model: str) -> int:
        """Load ``model`` as work of ``lease``; how long it took (nanoseconds).

        Past ``max_loaded`` on its GPU, the least recently used other models of that GPU
        are unloaded first, in this same lease (so nothing else runs on the GPU between the
        unload and the load); then ``make_room`` unloads what the budget needs unloaded.
        """
        while self._full(model):
            victim = min(self._beside(model), key=self.resident.last_used)
            logger.info("unloading %r to make room for %r (max_loaded_models)", victim, model)
            await self.unload_held(lease, victim)
        if self.make_room is not None:
            await self.make_room(lease, model)
        self._lane.publish(model, "loading")
        started = time.perf_counter_ns()

        async def run_load() -> None:
            await lease.run(self._backend.load(model), stop=partial(self._backend.abort, model))

        try:
            if self.meter is None:
                await run_load()
            else:
                gpu = self._lane.gpus.index_of(self._lane.guard_for(model))
                await self.meter.measure(model, run_load, gpu=gpu)
        except Exception as exc:
            self._lane.publish(model, "failed", detail=str(exc))
            raise
        took = time.perf_counter_ns() - started
        self.loaded.add(model)
        self.resident.add(model)
        self._lane.publish(model, "loaded")
        return took

    async def infos(self) -> list[ModelInfo]:
        """Every model the backend knows, with its loaded state (which corrects ``loaded``)."""
        known = await self._backend.list_models()
        loaded = {m.id: m for m in await self._backend.loaded_models()}
        for gone in self.loaded - set(loaded):
            self.resident.discard(gone)
        for name in loaded:
            if name not in self.resident:
                self.resident.add(name)
        self.loaded = set(loaded)
        names = list(dict.fromkeys([*known, *loaded]))
        return [
            ModelInfo(
                id=name,
                loaded=name in loaded,
                current=name == self.current,
                vram_bytes=self.vram_bytes(loaded[name]) if name in loaded else None,
            )
            for name in names
        ]

    def vram_bytes(self, loaded: LoadedModel) -> int | None:
        """GPU memory of a loaded model: as the backend reports it, else its known footprint."""
        if loaded.vram_bytes is not None or self.meter is None:
            return loaded.vram_bytes
        return self.meter.book.get(loaded.id)

    def _hold(self, operation: str, model: str, hold_s: float | None) -> Hold:
        return self._lane.hold(operation, model, Priority.NORMAL, hold_s, self._timeouts.wait_s)
