"""What one process knows of the Redis lease: Redis's last report, corrected by its own steps.

Redis's answers (:class:`~._mirror.Mirror`) lag this process by up to a round trip, so
:class:`LeaseView` reads them through this process's own tickets: a grant it holds shows at
once, a ticket it has withdrawn or given back is gone at once, and a request still on its way to
Redis already counts in the line, after those Redis reported (it will reach Redis before any
later request of this process). ``current``, ``snapshot()`` and ``queue_length`` of a Redis-
scope guard read this view.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Final

from ...._events import Priority
from ..._queue import effective_priority
from ..._tickets import Grant, Queued, Ticket
from ._mirror import Mirror, grants

__all__ = ["PLACE_GONE", "LeaseView", "Mine", "Verdicts"]

PLACE_GONE: Final = (
    "its place in line is gone from Redis (its process did not renew it in time, "
    "or Redis lost its data)"
)


@dataclass(slots=True)
class Mine:
    """A ticket of this process: waiting (``future`` unresolved) or holding (``fence``)."""

    ticket: Ticket
    json: str = field(repr=False)
    """The ticket as Redis keeps it (:func:`~._mirror.ticket_json`): with the signing secret."""
    requested_at: float
    future: asyncio.Future[None]
    fence: str | None = None
    version: int = 0
    """The version of the state in Redis that granted it (or queued it)."""
    grant: Grant | None = None
    asking: asyncio.Future[Any] | None = None
    """What its task awaits while Redis decides: cancelled with that task, at once."""
    leaving: bool = False
    """Withdrawing: Redis's answer will no longer list it, and that is no loss."""
    waits: bool = False
    """It joined the line (a request that takes the GPU only at once does not wait)."""

    @property
    def gave_up(self) -> bool:
        """Its task was cancelled before the grant reached it (it may not have run since)."""
        return self.future.cancelled() or (self.asking is not None and self.asking.cancelled())


@dataclass(slots=True)
class Verdicts:
    """What a state read from Redis means for this process's tickets (Redis decides)."""

    granted: list[tuple[str, Mine]] = field(default_factory=list)
    """Waiting tickets that Redis names as the holder."""
    lost: list[tuple[str, str]] = field(default_factory=list)
    """Held tickets (and why) that a later state no longer names as the holder."""
    gone: list[tuple[str, Mine]] = field(default_factory=list)
    """Queued tickets that a later state no longer lists (:data:`PLACE_GONE`)."""
    unwanted: list[tuple[str, str]] = field(default_factory=list)
    """Grants (ticket, fence) to tickets this process gave up on: to give back."""


@dataclass(slots=True)
class LeaseView:
    """Redis's last report (``mirror``) and this process's tickets (``mine``, by Redis id)."""

    client_id: str
    aging_s: float | None
    mirror: Mirror = field(default_factory=Mirror)
    mine: dict[str, Mine] = field(default_factory=dict)

    def read(self, state: dict[str, Any], local_now: float) -> None:
        """Take a newer state from Redis (its times converted to this process's clock)."""
        requested = {tid: m.requested_at for tid, m in self.mine.items()}
        self.mirror = Mirror.read(state, local_now, requested)

    def verdicts(self, state: dict[str, Any]) -> Verdicts:
        """Judge this process's tickets by ``state``, read from Redis after each of them.

        Only states newer than a ticket's grant or place in line (``Mine.version``) judge
        it; a withdrawal in flight (``leaving``) is no loss.
        """
        newer = state["v"]
        named = {h["t"]: h["f"] for h in grants(state)}
        listed = {w["id"] for w in state["w"]} if isinstance(state["w"], list) else set()
        listed.update(state["o"])  # this process's tickets in line, shown or not
        verdicts = Verdicts()
        for tid, mine in self.mine.items():
            if mine.fence is None and tid in named:
                verdicts.granted.append((tid, mine))
            elif mine.fence is not None and named.get(tid) != mine.fence and newer > mine.version:
                now_held = "another holds it" if named else "nobody holds it"
                reason = f"its grant was gone or taken over in Redis ({now_held})"
                verdicts.lost.append((tid, reason))
            elif (
                mine.fence is None and not mine.leaving and 0 < mine.version < newer
            ) and tid not in listed:
                verdicts.gone.append((tid, mine))
        verdicts.unwanted = [
            (tid, fence)
            for tid, fence in named.items()
            if self.is_mine(tid) and tid not in self.mine
        ]
        return verdicts

    def holding(self) -> list[tuple[str, Mine]]:
        """The tickets of this process that hold the GPU (their Redis ids and records)."""
        return [(tid, m) for tid, m in self.mine.items() if m.fence is not None]

    def holders(self) -> tuple[Grant, ...]:
        """Every grant, oldest first: Redis's last report, with this process's own grants.

        A grant of this process shows from the moment it was taken here; one it gave back is
        gone at once.
        """
        listed = [
            (grant.fence or 0, grant)
            for tid, _, grant in self.mirror.holders
            if not self.is_mine(tid)
        ]
        listed += [(int(m.fence or 0), m.grant) for _, m in self.holding() if m.grant is not None]
        listed.sort(key=lambda item: item[0])
        return tuple(grant for _, grant in listed)

    def holder(self) -> Grant | None:
        """The oldest grant (the only one under the exclusive policy), or None."""
        held = self.holders()
        return held[0] if held else None

    def waiters(self, now: float) -> list[Queued]:
        """Every waiter in service order, aged to ``now`` by the queue's rules.

        The first of the line as Redis last reported it (less tickets this process withdrew),
        then this process's other tickets in line, then its requests that Redis has yet to
        answer, in the order they were sent.
        """
        line: list[tuple[float, Queued]] = [
            (seq, queued) for tid, seq, queued in self.mirror.waiters if self._still_waiting(tid)
        ]
        shown = {tid for tid, _, _ in self.mirror.waiters}
        later = [self.mine[t] for t in self.mirror.mine - shown if self._still_waiting(t)]
        later.sort(key=lambda m: m.requested_at)
        line += [
            (math.inf, Queued(m.ticket, m.requested_at, m.ticket.priority))
            for m in (*later, *self.asking())
        ]
        aged = [
            (seq, dataclasses.replace(queued, effective_priority=self._effective(queued, now)))
            for seq, queued in line
        ]
        aged.sort(key=lambda item: (-item[1].effective_priority, item[0]))  # stable
        return [queued for _, queued in aged]

    def queue_length(self) -> int:
        """How many wait: those Redis reported and still waiting, and requests in flight."""
        left = sum(not self._still_waiting(tid) for tid in self.mirror.mine)
        return self.mirror.count - left + len(self.asking())

    def asking(self) -> list[Mine]:
        """Requests of this process in flight: Redis will see them before any later one."""
        return [m for m in self.mine.values() if m.asking is not None and not m.asking.done()]

    def is_mine(self, tid: str) -> bool:
        """Whether Redis id ``tid`` names a ticket of this process (held, waiting or gone)."""
        return tid.startswith(self.client_id + ":")

    def _still_waiting(self, tid: str) -> bool:
        """False for a ticket of this process that has left the line since Redis reported."""
        if not self.is_mine(tid):
            return True
        mine = self.mine.get(tid)
        return mine is not None and mine.fence is None

    def _effective(self, queued: Queued, now: float) -> Priority:
        # A remote arrival converted to this clock may land a hair after ``now``.
        enqueued_at = min(queued.enqueued_at, now)
        return effective_priority(queued.ticket.priority, enqueued_at, now, self.aging_s)
