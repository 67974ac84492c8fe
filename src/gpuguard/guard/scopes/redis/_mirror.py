"""The Redis lease as one process last saw it: read from a transition's answer.

Redis reports times in its own clock (``TIME``, in ms); the mirror holds them in this
process's clock, so ``current`` and ``snapshot()`` read like those of any other scope.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...._events import Priority
from ..._tickets import Grant, Owner, Queued, Ticket

__all__ = ["Mirror", "ticket_json"]


@dataclass(slots=True)
class Mirror:
    """The shared state as last read from Redis, in this process's clock."""

    version: int = -1
    holder: Grant | None = None
    holder_id: str | None = None
    expires_in_s: float | None = None
    waiters: list[tuple[str, int, Queued]] = field(default_factory=list)
    """The first waiters in service order: ticket id, arrival number, the waiter here."""
    count: int = 0
    """How many wait in all (``waiters`` shows the first 32)."""
    mine: frozenset[str] = frozenset()
    """This process's tickets that were still in line."""

    @staticmethod
    def read(state: dict[str, Any], local_now: float, mine: dict[str, float]) -> Mirror:
        """The mirror of ``state``; ``mine`` gives this process's own request times."""

        def local(ms: float) -> float:
            return local_now - (float(state["now"]) - ms) / 1000.0

        mirror = Mirror(version=state["v"], count=int(state["n"]), mine=frozenset(state["o"]))
        h = state["h"]
        if h and h.get("ticket"):
            mirror.holder_id = h["t"]
            mirror.holder = Grant(
                _ticket(h["ticket"]),
                local(h["g"]),
                None if h["h"] is False else local(h["h"]),
                int(h["f"]),
            )
            mirror.expires_in_s = max(0.0, state["pttl"] / 1000.0)
        waiters = state["w"] if isinstance(state["w"], list) else []  # cjson: {} when empty
        mirror.waiters = [
            (
                w["id"],
                int(w["s"]),
                Queued(_ticket(w), mine.get(w["id"], local(w["e"])), Priority(w["r"])),
            )
            for w in waiters
        ]
        return mirror


def _ticket(raw: dict[str, Any]) -> Ticket:
    owner = Owner(int(raw["pid"]), str(raw["host"]), str(raw["proc"]))
    return Ticket(int(raw["l"]), raw["o"], raw["m"], Priority(raw["p"]), owner)


def ticket_json(ticket: Ticket, client_id: str, ttl_s: float) -> str:
    """``ticket`` as Redis keeps it (read back by :func:`_ticket`), from process ``client_id``."""
    return json.dumps(
        {
            "c": client_id,
            "l": ticket.lease_id,
            "o": ticket.operation,
            "m": ticket.model,
            "p": int(ticket.priority),
            "pid": ticket.owner.pid,
            "host": ticket.owner.host,
            "proc": ticket.owner.process,
            "ttl": int(ttl_s * 1000),
        }
    )
