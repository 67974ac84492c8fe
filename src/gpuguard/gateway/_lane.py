"""The guards as the gateway's parts use them: which GPU a model's work takes, model events."""

from __future__ import annotations

from collections.abc import Mapping

from .._events import ModelEvent, Priority
from ..guard import GpuGuard, GpuSet, Hold
from ..llm._protocol import LlmBackend

__all__ = ["Lane"]


class Lane:
    """The gateway's GPU leases and their bus, shared by the model, chat and embedding parts.

    :meth:`hold` asks for the lease of the GPU ``model`` works on, with one operation's wait
    and hold limits: a model pinned in ``pins`` (model to GPU index) takes its GPU's lease;
    any other takes the GPU with room (:meth:`GpuSet.place`) at its first operation and
    keeps it afterwards, since its weights are there. With one GPU every hold is that GPU's.
    :meth:`publish` puts a :class:`~gpuguard.ModelEvent` (loading, loaded, failed...) on
    the bus, tagged with the backend's kind.
    """

    def __init__(
        self, gpus: GpuSet, backend: LlmBackend, pins: Mapping[str, int] | None = None
    ) -> None:
        self.gpus = gpus
        self._backend = backend
        self._placed: dict[str, GpuGuard] = {
            model: gpus[index] for model, index in (pins or {}).items()
        }

    @property
    def guard(self) -> GpuGuard:
        """The main GPU's guard (the bus, the clock, a single-GPU view)."""
        return self.gpus.first

    def guard_for(self, model: str) -> GpuGuard:
        """The guard of the GPU ``model`` works on (placed now if it has none yet)."""
        guard = self._placed.get(model)
        if guard is None:
            guard = self._placed[model] = self.gpus.place()
        return guard

    def hold(
        self,
        operation: str,
        model: str,
        priority: Priority,
        hold_s: float | None,
        wait_s: float | None,
    ) -> Hold:
        """A hold of ``model``'s GPU for ``operation``, within these limits."""
        return self.guard_for(model).hold(
            operation, model=model, priority=priority, wait_timeout=wait_s, hold_timeout=hold_s
        )

    def publish(self, model: str, status: str, *, detail: str = "") -> None:
        """Publish a model event: ``model`` is now ``status``."""
        self.guard.events.publish(
            ModelEvent(
                model=model,
                status=status,
                backend=self._backend.kind,
                timestamp=self.guard.clock.time(),
                detail=detail,
            )
        )
