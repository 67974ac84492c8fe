"""The budget policy: operations share a big GPU while their declared memory fits.

A ticket is admitted beside the holders while what is committed on the GPU plus what the
ticket needs fits the GPU's memory minus a headroom. *Committed* is read from the GPU each
time (:class:`GpuMemory`, NVML in production): for each process that holds, the larger of
what its holders declared and what the driver lists for it (a holder that has not allocated
yet still counts in full), plus every byte the driver counts as used by anyone else (programs
that do not use gpuguard, engines in other processes).

*Resident* models (``resident``: the models this process keeps loaded, told by the gateway)
count explicitly, by their footprints, whether or not a lease holds: they are added to this
process's declared bytes, except those a holder or the ticket itself names (a chat on a
resident model counts that model once, as its need). So a load declared beside resident
models counts on top of them, never hidden in their ``max`` with what the driver lists. A
load itself (a transition) is admitted as if the idle resident models were gone: the gateway
unloads as many as it needs in the load's lease before loading (``gateway/_eviction.py``).

Rules beside the sum:

* Loads and unloads (the operations in :data:`TRANSITIONS`) never overlap each other: those
  are the steps that allocate or free big blocks at once.
* With nobody holding, the head of the line is always admitted: the budget never waits
  longer than the exclusive policy would, and an operation too big to share (or whose size
  is unknown) runs alone.
* Order is the line's, never the policy's: an arbiter grants only the head, so a later small
  waiter never overtakes an older one of higher or equal priority (aging decides as under
  :data:`~gpuguard.guard.policies.EXCLUSIVE`), and a big waiter at the head holds back everyone
  behind it until it fits: a stream of small operations cannot starve it.
* If the GPU cannot be read, it admits as the exclusive policy does, and says so once in the
  log (and once more when the GPU answers again).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final, Protocol

from ..._exceptions import DevicesUnavailable
from .._tickets import GpuBudget, Grant, Ticket

__all__ = ["TRANSITIONS", "Budget", "GpuMemory"]

_log = logging.getLogger("gpuguard.guard.budget")

TRANSITIONS: Final = frozenset({"load", "unload", "prewarm", "rewarm", "embed-load"})
"""The operations that load or unload a model (the gateway's names for them)."""


class GpuMemory(Protocol):
    """What the budget reads about a GPU (:class:`gpuguard.devices.GpuInfo` is one)."""

    @property
    def total_bytes(self) -> int:
        """The GPU's memory."""

    @property
    def free_bytes(self) -> int:
        """Memory no program uses now."""

    def used_by(self, pids: set[int]) -> int:
        """Bytes the driver lists for the processes ``pids``."""


class Budget:
    """Admit operations side by side while their memory fits (see the module docstring).

    Args:
        read: the GPU's memory now; may raise :class:`~gpuguard.DevicesUnavailable`.
        headroom_bytes: memory kept free for what nobody declared (allocator slack, drivers).
        footprints: bytes by model, for tickets that declare no ``memory_bytes``; kept, not
            copied, and read at each decision, so a footprint learned later (a
            :class:`~gpuguard.devices.FootprintBook`) counts at once.
        default_bytes: bytes for a ticket with neither; ``None`` (the default): it runs alone.
        resident: the models kept loaded by process ``resident_pid`` (default: this one);
            kept, not copied, and read at each decision, each counted by its footprint (one
            without a footprint is seen only through the driver's figures).
    """

    name: Final = "budget"

    def __init__(
        self,
        read: Callable[[], GpuMemory],
        *,
        headroom_bytes: int,
        footprints: Mapping[str, int] | None = None,
        default_bytes: int | None = None,
        resident: Collection[str] | None = None,
        resident_pid: int | None = None,
    ) -> None:
        if headroom_bytes < 0:
            raise ValueError("headroom_bytes must be >= 0")
        if default_bytes is not None and default_bytes < 0:
            raise ValueError("default_bytes must be >= 0")
        self._read = read
        self.headroom_bytes = headroom_bytes
        self.footprints: Mapping[str, int] = footprints if footprints is not None else {}
        self.default_bytes = default_bytes
        self.resident: Collection[str] = resident if resident is not None else ()
        self.resident_pid = os.getpid() if resident_pid is None else resident_pid
        self._unreadable: str | None = None

    def admits(self, holders: Sequence[Grant], ticket: Ticket) -> bool:
        """True if ``ticket`` fits beside ``holders`` (always, when nobody holds)."""
        if not holders:
            return True
        if is_transition(ticket) and any(is_transition(g.ticket) for g in holders):
            return False
        try:
            gpu = self._read()
        except DevicesUnavailable as exc:
            self._note_unreadable(str(exc))
            return False  # someone holds: admit as the exclusive policy does
        self._note_unreadable(None)
        need = self.need(ticket)
        if need is None or any(self.need(g.ticket) is None for g in holders):
            return False
        committed = committed_bytes(holders, gpu, self, ticket)
        if is_transition(ticket):  # the load may unload idle resident models to make room
            committed -= self.idle_resident_bytes(holders, ticket)
        return committed + need <= gpu.total_bytes - self.headroom_bytes

    def need(self, ticket: Ticket) -> int | None:
        """The bytes ``ticket`` needs; ``None`` if unknown (it must run alone)."""
        if ticket.memory_bytes is not None:
            return ticket.memory_bytes
        if ticket.model is not None and ticket.model in self.footprints:
            return self.footprints[ticket.model]
        return self.default_bytes

    def resident_sizes(self) -> dict[str, int | None]:
        """Each resident model and its footprint (``None``: not known)."""
        return {model: self.footprints.get(model) for model in list(self.resident)}

    def idle_resident_bytes(self, holders: Sequence[Grant], ticket: Ticket | None = None) -> int:
        """The known bytes of the resident models that neither ``holders`` nor ``ticket`` name."""
        named = {g.ticket.model for g in holders}
        if ticket is not None:
            named.add(ticket.model)
        sizes = self.resident_sizes()
        return sum(size for model, size in sizes.items() if size and model not in named)

    def memory(self, holders: Sequence[Grant]) -> GpuBudget | None:
        """The GPU's memory now, as counted beside ``holders`` (``None``: it cannot be read)."""
        try:
            gpu = self._read()
        except DevicesUnavailable:
            return None
        return GpuBudget(
            total_bytes=gpu.total_bytes,
            free_bytes=gpu.free_bytes,
            headroom_bytes=self.headroom_bytes,
            committed_bytes=committed_bytes(holders, gpu, self),
            resident=self.resident_sizes(),
        )

    def _note_unreadable(self, reason: str | None) -> None:
        if reason == self._unreadable or (reason is not None and self._unreadable is not None):
            return
        if reason is None:
            _log.warning("the GPU answers again: the budget policy shares it again")
        else:
            _log.warning("the GPU cannot be read (%s): one operation at a time for now", reason)
        self._unreadable = reason

    def __repr__(self) -> str:
        return f"<Budget headroom={self.headroom_bytes} footprints={len(self.footprints)}>"


def is_transition(ticket: Ticket) -> bool:
    """True if ``ticket`` loads or unloads a model."""
    return ticket.operation in TRANSITIONS


def committed_bytes(
    holders: Sequence[Grant], gpu: GpuMemory, budget: Budget, ticket: Ticket | None = None
) -> int:
    """Memory taken or promised: each process's max(declared, listed), plus the rest.

    The resident models nobody holding (nor ``ticket``) names are declared by their process.
    """
    declared: dict[int, int] = {}
    for grant in holders:
        pid = grant.ticket.owner.pid
        declared[pid] = declared.get(pid, 0) + (budget.need(grant.ticket) or 0)
    idle = budget.idle_resident_bytes(holders, ticket)
    if idle:
        declared[budget.resident_pid] = declared.get(budget.resident_pid, 0) + idle
    listed = {pid: gpu.used_by({pid}) for pid in declared}
    others = max(0, gpu.total_bytes - gpu.free_bytes - sum(listed.values()))
    return others + sum(max(declared[pid], listed[pid]) for pid in declared)
