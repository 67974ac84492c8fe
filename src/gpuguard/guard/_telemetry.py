"""A guard's counters and events: every lease transition is counted and published here.

Shared by every guard scope: the front calls one method per transition, and this module
keeps :class:`~gpuguard.GuardCounters` consistent with the events subscribers see.
Logging is not done here: :func:`log_gpu_event` is a listener on the bus. An event is built
only once something takes it (:meth:`EventBus.publish_lazily`): a subscriber, a listener
that wants its level, or a reader of the bus's history; the counters count every transition.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import Any

from .._clock import Clock
from .._events import Event, EventBus, GpuEvent, GpuStatus, Priority
from ._snapshot import GuardCounters
from ._tickets import Ticket

__all__ = ["GuardTelemetry", "log_gpu_event", "log_wants"]

logger = logging.getLogger("gpuguard.guard")

CANCELLED_WHILE_WAITING = "cancelled while waiting"


class GuardTelemetry:
    """Counts and publishes the transitions of one guard's leases."""

    def __init__(self, guard: str, events: EventBus, clock: Clock) -> None:
        self.guard = guard
        self.events = events
        self.clock = clock
        self._tally: defaultdict[str, Any] = defaultdict(int)  # ints, and float totals

    @property
    def counters(self) -> GuardCounters:
        """Totals since the guard was created."""
        return dataclasses.replace(GuardCounters(), **self._tally)

    def waiting(self, ticket: Ticket, *, position: int, holder: str | None) -> None:
        """``ticket`` joined the queue at ``position``."""
        self._emit(ticket, GpuStatus.WAITING, position=position, holder=holder)

    def started(self, ticket: Ticket, *, waited_s: float, queued: bool) -> None:
        """``ticket`` was granted the GPU."""
        tally = self._tally
        tally["acquired"] += 1
        if queued:
            tally["waited"] += 1
            tally["total_wait_s"] += waited_s
        self._emit(ticket, GpuStatus.STARTED, waited_s)

    def ended(
        self, ticket: Ticket, status: GpuStatus, *, waited_s: float, held_s: float, detail: str
    ) -> None:
        """A held lease ended ``completed``, ``failed`` or ``cancelled``."""
        tally = self._tally
        tally[_KEYS[status]] += 1
        tally["total_hold_s"] += held_s
        self._emit(ticket, status, waited_s, held_s, detail=detail)

    def hung(self, ticket: Ticket, *, waited_s: float, held_s: float, detail: str) -> None:
        """A holder outlived its hold timeout."""
        self._tally["hung"] += 1
        self._emit(ticket, GpuStatus.HUNG, waited_s=waited_s, held_s=held_s, detail=detail)

    def recovered(self, ticket: Ticket, *, held_s: float, detail: str) -> None:
        """A hung holder's work has ended: the GPU is free again."""
        self._tally["total_hold_s"] += held_s
        self._emit(ticket, GpuStatus.RECOVERED, held_s=held_s, detail=detail)

    def timed_out(self, ticket: Ticket, *, waited_s: float, holder: str | None) -> None:
        """A waiter gave up after its wait timeout."""
        self._tally["timed_out"] += 1
        detail = f"gave up waiting for the GPU after {waited_s:.3f}s"
        self._emit(ticket, GpuStatus.TIMED_OUT, waited_s=waited_s, holder=holder, detail=detail)

    def rejected(self, ticket: Ticket, *, holder: str | None) -> None:
        """A request found the queue full."""
        self._tally["rejected"] += 1
        self._emit(ticket, GpuStatus.REJECTED, holder=holder, detail="GPU queue full")

    def abandoned(self, ticket: Ticket, *, waited_s: float) -> None:
        """A waiter was cancelled before it got the GPU."""
        self._tally["abandoned"] += 1
        self._emit(ticket, GpuStatus.CANCELLED, waited_s=waited_s, detail=CANCELLED_WHILE_WAITING)

    def retry_after(self, queue_length: int) -> float:
        """A guess at when a rejected request could be served: mean hold x queue, >= 1 s."""
        c = self.counters
        finished = c.completed + c.failed + c.cancelled + c.hung
        mean_hold = c.total_hold_s / max(1, finished)
        return max(1.0, mean_hold * (queue_length + 1))

    def _emit(
        self,
        ticket: Ticket,
        status: GpuStatus,
        waited_s: float = 0.0,
        held_s: float = 0.0,
        *,
        position: int | None = None,
        holder: str | None = None,
        detail: str = "",
    ) -> None:
        """Publish the event of a transition; built only once something takes it."""
        self.events.publish_lazily(
            _LEVEL_TABLE[ticket.priority][status],
            _gpu_event,
            self.guard,
            ticket,
            status,
            self.clock.time(),
            waited_s,
            held_s,
            position,
            holder,
            detail,
        )


def _gpu_event(
    guard: str,
    ticket: Ticket,
    status: GpuStatus,
    timestamp: float,
    waited_s: float = 0.0,
    held_s: float = 0.0,
    position: int | None = None,
    holder: str | None = None,
    detail: str = "",
) -> GpuEvent:
    """The event of ``ticket``'s transition to ``status`` on ``guard`` at ``timestamp``."""
    return GpuEvent(
        guard=guard,
        operation=ticket.operation,
        model=ticket.model,
        status=status,
        timestamp=timestamp,
        lease_id=ticket.lease_id,
        priority=ticket.priority,
        waited_s=waited_s,
        held_s=held_s,
        position=position,
        holder=holder,
        detail=detail,
        pid=ticket.owner.pid,
        host=ticket.owner.host,
    )


_LEVELS = {
    GpuStatus.FAILED: logging.WARNING,
    GpuStatus.TIMED_OUT: logging.WARNING,
    GpuStatus.REJECTED: logging.WARNING,
    GpuStatus.HUNG: logging.ERROR,
}


_ROUTINE = frozenset({GpuStatus.STARTED, GpuStatus.COMPLETED})

_ROUTINE_LEVELS = {p: logging.DEBUG if p is Priority.BACKGROUND else logging.INFO for p in Priority}
"""The level of a routine grant or release, by priority (see :func:`log_gpu_event`)."""

_KEYS = {status: str(status) for status in GpuStatus}
"""Each status's counter (:class:`GuardCounters` names a counter after its status)."""

log_wants = logger.isEnabledFor
"""Whether :func:`log_gpu_event` would log an event of a level (its ``wants`` on the bus)."""


def _level_of(status: GpuStatus, priority: Priority) -> int:
    """The level :func:`log_gpu_event` logs a ``status`` event of ``priority`` at."""
    if status in _ROUTINE:
        return _ROUTINE_LEVELS[priority]
    return _LEVELS.get(status, logging.INFO)


_LEVEL_TABLE = {p: {status: _level_of(status, p) for status in GpuStatus} for p in Priority}
""":func:`_level_of` for each priority and status, looked up on every transition."""


def log_gpu_event(event: Event) -> None:
    """Log one GPU event on the ``gpuguard.guard`` logger (a listener on the guard's bus).

    Background work's routine grants and releases (one pair per bulk embedding batch) go to
    DEBUG, so that they do not drown the log; bulk embedding logs its own GPU/CPU switches.
    """
    if not isinstance(event, GpuEvent):
        return
    level = _level_of(event.status, event.priority)
    if not logger.isEnabledFor(level):
        return
    logger.log(level, "%s", _describe(event))


def _describe(e: GpuEvent) -> str:
    head = f"op={e.operation} model={e.model}"
    detail = f" ({e.detail})" if e.detail else ""
    match e.status:
        case GpuStatus.STARTED:
            return f"acquired: {head} priority={e.priority} waited={e.waited_s:.3f}s"
        case GpuStatus.WAITING:
            return f"waiting: {head} priority={e.priority} position={e.position} holder={e.holder}"
        case GpuStatus.CANCELLED if e.detail == CANCELLED_WHILE_WAITING:
            return f"cancelled: {head} waited={e.waited_s:.3f}s (while waiting)"
        case GpuStatus.COMPLETED | GpuStatus.FAILED | GpuStatus.CANCELLED:
            return f"released: {head} outcome={e.status} held={e.held_s:.3f}s{detail}"
        case GpuStatus.TIMED_OUT:
            return f"timed out: {head} waited={e.waited_s:.3f}s holder={e.holder}"
        case GpuStatus.REJECTED:
            return f"rejected: {head} holder={e.holder}"
        case GpuStatus.HUNG:
            return f"hung: {head} held={e.held_s:.3f}s{detail}"
        case GpuStatus.RECOVERED:
            return f"recovered: {head} held={e.held_s:.3f}s{detail}"
        case _:
            return f"{e.status}: {head}{detail}"
