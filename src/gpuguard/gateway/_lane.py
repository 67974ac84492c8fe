"""The guards as the gateway's parts use them: which GPU a model's work takes, model events."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from .._events import ModelEvent, Priority
from ..guard import GpuGuard, GpuSet, Hold
from ..llm._protocol import LlmBackend

__all__ = ["Lane", "Placement"]


class Placement:
    """Which GPU (NVML index) each model works on: its pin, else where it was placed.

    Made before the guards when their budgets count resident models per GPU
    (:meth:`resident_on`), and handed to the gateway, whose :class:`Lane` fills it in.
    """

    def __init__(self, pins: Mapping[str, int] | None = None) -> None:
        self._gpu = dict(pins or {})

    def get(self, model: str) -> int | None:
        """The GPU ``model`` works on, if it has one yet."""
        return self._gpu.get(model)

    def set(self, model: str, index: int) -> None:
        """``model`` works on GPU ``index`` from now on."""
        self._gpu[model] = index

    def items(self) -> Iterator[tuple[str, int]]:
        """Each placed model and its GPU."""
        return iter(list(self._gpu.items()))

    def resident_on(self, resident: Collection[str], index: int, *, first: int) -> Collection[str]:
        """The models of ``resident`` on GPU ``index`` (one not placed yet: on ``first``)."""
        return _ResidentOn(resident, self, index, first)


class _ResidentOn(Collection[str]):
    """A live view of the resident models one GPU holds."""

    def __init__(self, resident: Collection[str], placement: Placement, index: int, first: int):
        self._resident, self._placement = resident, placement
        self._index, self._first = index, first

    def _here(self, model: str) -> bool:
        placed = self._placement.get(model)
        return (self._first if placed is None else placed) == self._index

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and model in self._resident and self._here(model)

    def __iter__(self) -> Iterator[str]:
        return (model for model in self._resident if self._here(model))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Lane:
    """The gateway's GPU leases and their bus, shared by the model, chat and embedding parts.

    :meth:`hold` asks for the lease of the GPU ``model`` works on, with one operation's wait
    and hold limits: a model pinned in ``pins`` (model to GPU index) takes its GPU's lease;
    any other takes the GPU with room (:meth:`GpuSet.place`) at its first operation and
    keeps it afterwards, since its weights are there (recorded in :attr:`placement`). With
    one GPU every hold is that GPU's.
    :meth:`publish` puts a :class:`~gpuguard.ModelEvent` (loading, loaded, failed...) on
    the bus, tagged with the backend's kind.
    """

    def __init__(
        self,
        gpus: GpuSet,
        backend: LlmBackend,
        pins: Placement | Mapping[str, int] | None = None,
    ) -> None:
        self.gpus = gpus
        self._backend = backend
        self.placement = pins if isinstance(pins, Placement) else Placement(pins)
        for _, index in self.placement.items():
            gpus[index]  # a pin to a GPU outside the set fails here, at start-up

    @property
    def guard(self) -> GpuGuard:
        """The main GPU's guard (the bus, the clock, a single-GPU view)."""
        return self.gpus.first

    def guard_for(self, model: str) -> GpuGuard:
        """The guard of the GPU ``model`` works on (placed now if it has none yet)."""
        index = self.placement.get(model)
        if index is None:
            guard = self.gpus.place()
            self.placement.set(model, self.gpus.index_of(guard))
            return guard
        return self.gpus[index]

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
