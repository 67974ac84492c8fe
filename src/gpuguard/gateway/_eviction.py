"""Room made by the budget: idle resident models unloaded before a load that does not fit.

Under a sharing policy (the snapshot counts memory), a load (an LLM model, the GPU
embedding model) asks, inside its own lease, whether its footprint fits what the budget has
left beside what is committed, resident models included. If it fits, it loads beside them:
nothing is unloaded. If not, idle resident models are unloaded in the same lease, one by one,
until it fits: those of the lowest chat priority first, the least recently used first among
equals. A model a lease names (a chat streaming from it, a batch embedding on it) is never
unloaded, nor one whose size is unknown. If even every idle model would not make room, none
is unloaded and the load runs as it would have (alone on the budget's terms), which the log
says. Under ``exclusive`` (no memory counted) nothing happens here: ``max_loaded_models``
bounds the models loaded, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from .._events import Priority
from ..guard import Lease
from ._embeddings import Embeddings
from ._footprints import Footprints
from ._lane import Lane
from ._models import LlmModels
from ._resident import Resident

__all__ = ["Evictor", "attach_evictor"]

logger = logging.getLogger("gpuguard.gateway")

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Shortfall:
    """How far a load is over the budget.

    ``need`` is its footprint (``None``: unknown), ``short`` what it lacks (0 when unknown),
    ``busy`` the models other leases name.
    """

    need: int | None
    short: int
    busy: set[str | None]


class Evictor:
    """Makes room for a load by unloading idle resident models (see the module docstring).

    ``footprints`` gives each model's bytes (the budget's own mapping); ``residents`` lists
    the models kept loaded now.
    """

    def __init__(
        self,
        lane: Lane,
        footprints: Footprints,
        residents: Callable[[], Collection[Resident]],
    ) -> None:
        self._lane = lane
        self._footprints = footprints
        self._residents = residents

    def fits(self, lease: Lease, model: str) -> bool:
        """Whether ``model`` fits beside what is committed now, with nothing unloaded.

        True as well where nothing is counted (exclusive, the GPU unreadable, its size
        unknown): the load runs as it always has.
        """
        shortfall = self._shortfall(lease, model)
        return shortfall is None or shortfall.short <= 0

    async def make_room(self, lease: Lease, model: str) -> None:
        """Unload idle resident models until ``model`` fits the budget; ``lease`` is its load's."""
        shortfall = self._shortfall(lease, model)
        if shortfall is None:
            return
        need, short = shortfall.need, shortfall.short
        if need is None:
            logger.info("the size of %r is not known yet: it loads without making room", model)
            return
        if short <= 0:
            return
        victims = self._victims(model, shortfall.busy, short)
        if victims is None:
            logger.warning(
                "%r needs %.0f MiB, %.0f MiB more than the budget has left, and unloading "
                "every idle model would not make room: it loads as before, nothing unloaded",
                model,
                need / MIB,
                short / MIB,
            )
            return
        for victim, size in victims:
            await victim.unload(lease, f"to make room for {model!r}")
            logger.info(
                "unloaded %r (%.0f MiB) to make room for %r", victim.name, size / MIB, model
            )

    def _shortfall(self, lease: Lease, model: str) -> _Shortfall | None:
        """How far ``model``'s load (in ``lease``) is over the budget (``None``: not counted)."""
        snapshot = self._lane.guard.snapshot()
        memory = snapshot.memory
        if memory is None:
            return None  # exclusive, or the GPU cannot be read: nothing is counted
        need = self._footprints.get(model)
        if need is None:
            return _Shortfall(None, 0, set())
        counted = 0
        busy: set[str | None] = set()
        for holder in snapshot.holders:
            if holder.lease_id == lease.lease_id:
                counted += holder.memory_bytes or 0
            else:
                busy.add(holder.model)
        return _Shortfall(need, need - counted - memory.available_bytes, busy)

    def _victims(
        self, model: str, busy: set[str | None], short: int
    ) -> list[tuple[Resident, int]] | None:
        """The idle models to unload, in order, freeing ``short`` bytes (``None``: cannot)."""
        idle = sorted(
            (r for r in self._residents() if r.name != model and r.name not in busy),
            key=lambda r: (r.priority, r.last_used),
        )
        chosen: list[tuple[Resident, int]] = []
        freed = 0
        for resident in idle:
            size = self._footprints.get(resident.name)
            if not size:
                continue
            chosen.append((resident, size))
            freed += size
            if freed >= short:
                return chosen
        return None


def attach_evictor(
    lane: Lane,
    footprints: Footprints,
    models: LlmModels,
    embeddings: Embeddings,
    priorities: Mapping[str, Priority],
) -> Evictor:
    """An evictor over the LLM models and the GPU embedding model, run by both kinds of load.

    ``priorities`` (the chats' priorities per model) is read at each eviction.
    """

    def residents() -> list[Resident]:
        return [*models.residents(priorities), *embeddings.residents()]

    evictor = Evictor(lane, footprints, residents)
    models.make_room = embeddings.make_room = evictor.make_room
    models.fits = evictor.fits
    return evictor
