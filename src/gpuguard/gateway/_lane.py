"""The guard as the gateway's parts use it: holds with an operation's limits, model events."""

from __future__ import annotations

from .._events import ModelEvent, Priority
from ..guard import GpuGuard, Hold
from ..llm._protocol import LlmBackend

__all__ = ["Lane"]


class Lane:
    """The gateway's GPU lease and its bus, shared by the model, chat and embedding parts.

    :meth:`hold` asks for the lease with one operation's wait and hold limits;
    :meth:`publish` puts a :class:`~gpuguard.ModelEvent` (loading, loaded, failed...) on
    the guard's bus, tagged with the backend's kind.
    """

    def __init__(self, guard: GpuGuard, backend: LlmBackend) -> None:
        self.guard = guard
        self._backend = backend

    def hold(
        self,
        operation: str,
        model: str,
        priority: Priority,
        hold_s: float | None,
        wait_s: float | None,
    ) -> Hold:
        """A hold of the GPU for ``operation`` on ``model``, within these limits."""
        return self.guard.hold(
            operation, model=model, priority=priority, wait_timeout=wait_s, hold_timeout=hold_s
        )

    def holder_name(self) -> str | None:
        """Who holds the GPU now, as a waiting user is told."""
        current = self.guard.current
        return None if current is None else current.label

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
