"""The Redis lease as one process last saw it: read from a transition's answer.

Redis reports times in its own clock (``TIME``, in ms); the mirror holds them in this
process's clock, so ``current`` and ``snapshot()`` read like those of any other scope.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from ...._events import Priority
from ..._tickets import Grant, Owner, Queued, Ticket

__all__ = ["Heard", "Mirror", "Share", "grants", "heard_grant", "ticket_json"]


@dataclass(slots=True)
class Mirror:
    """The shared state as last read from Redis, in this process's clock."""

    version: int = -1
    holders: list[tuple[str, str, Grant]] = field(default_factory=list)
    """Every grant, oldest first: ticket id, fence, the grant here."""
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
        mirror.holders = [
            (
                h["t"],
                h["f"],
                Grant(
                    _ticket(h["ticket"]),
                    local(h["g"]),
                    None if h["h"] is False else local(h["h"]),
                    int(h["f"]),
                ),
            )
            for h in grants(state)
        ]
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


def grants(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The grants a state from Redis lists, oldest first (cjson writes none as ``{}``)."""
    held = state["h"]
    return held if isinstance(held, list) else []


def _ticket(raw: dict[str, Any]) -> Ticket:
    owner = Owner(int(raw["pid"]), str(raw["host"]), str(raw["proc"]))
    need = raw.get("b")
    memory = need if isinstance(need, int) and not isinstance(need, bool) else None
    return Ticket(int(raw["l"]), raw["o"], raw["m"], Priority(raw["p"]), owner, memory)


def ticket_json(
    ticket: Ticket,
    client_id: str,
    ttl_s: float,
    teardown_s: float,
    share: Share | None = None,
    *,
    secret: str = "",
) -> str:
    """``ticket`` as Redis keeps it (read back by :func:`_ticket`), from process ``client_id``.

    ``teardown_s``: how long its holder is remembered after its grant lapses (a dead holder's
    GPU teardown, :mod:`._lua_grants`); ``share``: what a sharing policy counts for it
    (``None``: it runs alone); ``secret``: the key the lease script signs this process's grant
    messages with (:func:`heard_grant`).
    """
    raw: dict[str, Any] = {
        "c": client_id,
        "k": secret,
        "l": ticket.lease_id,
        "o": ticket.operation,
        "m": ticket.model,
        "p": int(ticket.priority),
        "pid": ticket.owner.pid,
        "host": ticket.owner.host,
        "proc": ticket.owner.process,
        "ttl": int(ttl_s * 1000),
        "td": int(teardown_s * 1000),
    }
    if share is not None:
        raw.update(b=share.need_bytes, room=share.room_bytes, tr=share.transition)
    return json.dumps(raw)


@dataclass(frozen=True, slots=True)
class Share:
    """What the lease script counts for a ticket under a sharing policy (bytes)."""

    need_bytes: int
    """What the policy counts for it (declared, or the model's footprint)."""
    room_bytes: int
    """What its process measured as shareable: the GPU less the headroom and foreign memory."""
    transition: bool
    """It loads or unloads a model (two never overlap)."""


@dataclass(frozen=True, slots=True)
class Heard:
    """A grant as its message told it, signed by the lease script (:func:`heard_grant`)."""

    tid: str
    fence: str
    floor: int
    """The oldest grant still holding beside it: its own fence if it was granted alone."""
    until_ms: int
    """When it lapses unless renewed, in Redis ``TIME`` ms."""
    version: int
    """The version of the lease the grant made."""

    def answer(self, sent: float, redis_ms: int) -> dict[str, Any]:
        """The grant as an answer of the lease script would list it (and nothing else).

        ``sent`` (this host's monotonic time) preceded Redis ``TIME`` ``redis_ms``: an answer
        this process had before, so the grant's time left is counted from no later than then.
        """
        left = {"t": self.tid, "f": self.fence, "lo": str(self.floor)}
        return {"v": self.version, "sent": sent, "h": [{**left, "pttl": self.until_ms - redis_ms}]}


def heard_grant(note: str, secret: str) -> Heard | None:
    """The grant a ``grant`` message's ``note`` carries, if the lease script signed it.

    ``note``: ``<ticket> <fence> <floor> <until ms> <version> <mac>``, where ``mac`` is
    ``sha1(secret + sha1(secret + the rest))`` in hex (the secret is in this process's tickets
    only, never in an answer or a message). None for anything else: anyone may publish.
    """
    *fields, mac = note.split(" ")
    if not secret or len(fields) != 5 or not all(f.isascii() and f.isdigit() for f in fields[1:]):
        return None
    body = " ".join(fields)
    inner = hashlib.sha1((secret + body).encode()).hexdigest()
    signed = hashlib.sha1((secret + inner).encode()).hexdigest()
    if not hmac.compare_digest(signed.encode(), mac.encode()):
        return None
    tid, fence, floor, until_ms, version = fields
    return Heard(tid, fence, int(floor), int(until_ms), int(version))
