"""Several GPUs: one :class:`GpuGuard` per GPU, in order, and where work has the most room."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .._events import EventBus
from .._exceptions import ConfigError
from ._guard import GpuGuard

__all__ = ["GpuSet"]


class GpuSet:
    """The leases of the GPUs this process uses, one :class:`GpuGuard` per GPU, in order.

    ``guards`` maps each GPU's NVML index to its guard; the first is the process's main GPU
    (the one a single-GPU view shows). Every guard publishes on the first guard's bus when
    they share it (``build_guards`` makes them so). :meth:`by_room` orders the GPUs by the
    room each policy sees for new work; with one GPU it is that GPU.
    """

    def __init__(self, guards: Mapping[int, GpuGuard]) -> None:
        if not guards:
            raise ConfigError("a GPU set needs at least one GPU")
        self._guards = dict(guards)

    @classmethod
    def single(cls, guard: GpuGuard) -> GpuSet:
        """A set of one GPU, index 0: the shape of every single-GPU process."""
        return cls({0: guard})

    @property
    def first(self) -> GpuGuard:
        """The main GPU's guard (GPU 0 unless the set leaves it out)."""
        return next(iter(self._guards.values()))

    @property
    def indices(self) -> tuple[int, ...]:
        """The NVML indices of the GPUs, in order."""
        return tuple(self._guards)

    @property
    def events(self) -> EventBus:
        """The bus the guards publish on (the first guard's)."""
        return self.first.events

    def __getitem__(self, index: int) -> GpuGuard:
        """The guard of GPU ``index``; an index outside the set is a :class:`ConfigError`."""
        try:
            return self._guards[index]
        except KeyError:
            raise ConfigError(
                f"GPU {index} is not one of this server's GPUs ({_listed(self.indices)}); "
                "see [guard] gpus"
            ) from None

    def __contains__(self, index: object) -> bool:
        return index in self._guards

    def __iter__(self) -> Iterator[GpuGuard]:
        return iter(self._guards.values())

    def __len__(self) -> int:
        return len(self._guards)

    def index_of(self, guard: GpuGuard) -> int:
        """The NVML index of ``guard``'s GPU (a :class:`ConfigError` for a stranger)."""
        for index, mine in self._guards.items():
            if mine is guard:
                return index
        raise ConfigError(f"{guard!r} is not one of this server's GPUs")

    def items(self) -> Iterator[tuple[int, GpuGuard]]:
        """Each GPU's index and guard, in order."""
        return iter(self._guards.items())

    def by_room(self) -> list[GpuGuard]:
        """The guards, the one with the most room for new work first.

        Under a sharing policy whose GPU can be read, room is the free budget (budget less
        committed memory), after any GPU with a line; under ``exclusive`` an idle GPU comes
        before a held one, then the shorter line. Ties keep the set's order.
        """
        return sorted(self._guards.values(), key=_load)

    def place(self) -> GpuGuard:
        """The guard new unpinned work goes to: the first of :meth:`by_room`."""
        return self.by_room()[0] if len(self._guards) > 1 else self.first

    async def aclose(self) -> None:
        """Close every guard (their scopes' connections and tasks)."""
        for guard in self._guards.values():
            await guard.aclose()

    def __repr__(self) -> str:
        return f"<GpuSet {[guard.name for guard in self._guards.values()]}>"


def _load(guard: GpuGuard) -> tuple[int, int, int]:
    """How loaded a GPU is, smallest first: (has a line or is full, line, less free budget)."""
    waiting = guard.queue_length
    memory = None if guard.policy == "exclusive" else guard.memory  # exclusive counts none
    if memory is None:
        return (1 if waiting or guard.locked else 0, waiting, 0)
    free = memory.budget_bytes - memory.committed_bytes
    return (1 if waiting or free <= 0 else 0, waiting, -free)


def _listed(indices: tuple[int, ...]) -> str:
    return ", ".join(str(index) for index in indices)
