"""Unload a model that has been idle for its configured time, under the GPU lease.

Use is read from the guard's ``gpu`` events (any operation on the model but its own unload).
Each use re-arms the model's timer on the guard's clock; when it fires and the model is not
being used at that moment, :meth:`ModelGateway.unload` frees it (queued like every load and
unload, at normal priority). A model in use when its timer fires is re-armed by that use's
end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from .._clock import TimerHandle
from .._events import GpuEvent
from .._exceptions import GpuGuardError
from ..gateway import ModelGateway

__all__ = ["IdleUnloader"]

logger = logging.getLogger("gpuguard.server")


class IdleUnloader:
    """Unloads each model of ``ttls`` (backend id -> idle seconds) once idle that long."""

    def __init__(self, gateway: ModelGateway, ttls: Mapping[str, float]) -> None:
        self._gateway = gateway
        self._ttls = dict(ttls)
        self._timers: dict[str, TimerHandle] = {}
        self._unloads: set[asyncio.Task[None]] = set()
        self._subscription = gateway.events.subscribe(kinds={"gpu"})
        self.events_seen = 0
        self._watcher = asyncio.create_task(self._watch(), name="idle-unload")

    @property
    def armed(self) -> frozenset[str]:
        """The models whose idle timer is running."""
        return frozenset(self._timers)

    async def _watch(self) -> None:
        while True:
            try:
                event = await self._subscription.get()
            except EOFError:
                return
            self.events_seen += 1
            if isinstance(event, GpuEvent) and event.operation != "unload":
                self._used(event.model)

    def _used(self, model: str | None) -> None:
        ttl = self._ttls.get(model or "")
        if model is None or ttl is None:
            return
        timer = self._timers.pop(model, None)
        if timer is not None:
            timer.cancel()
        self._timers[model] = self._gateway.guard.clock.call_later(
            ttl, lambda: self._expired(model)
        )

    def _expired(self, model: str) -> None:
        self._timers.pop(model, None)
        holding = (guard.current for guard in self._gateway.gpus)
        if any(current is not None and current.model == model for current in holding):
            return  # in use, on whichever GPU: the end of that use re-arms the timer
        task = asyncio.get_running_loop().create_task(self._unload(model))
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _unload(self, model: str) -> None:
        try:
            await self._gateway.unload(model)
        except GpuGuardError as exc:
            logger.warning("idle unload of %r failed: %s", model, exc)
        else:
            logger.info("unloaded %r after %ss idle", model, self._ttls[model])

    async def aclose(self) -> None:
        """Stop watching; cancel pending timers and unloads."""
        self._subscription.close()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = [self._watcher, *self._unloads]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
