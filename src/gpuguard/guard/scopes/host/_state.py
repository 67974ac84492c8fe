"""The host-wide lease's state: what every process reads and writes under the lock.

Pure data and its encoding. A state that does not parse is an error (:class:`StateError`),
never a free GPU: the directory (:mod:`._lease_dir`) decides whether it can be rebuilt.

The format grows only by top-level keys, which older processes ignore and newer ones default:
``holders`` (every grant, oldest first; ``holder`` stays the oldest, for a process that reads
only it) and ``counted`` (per request: the bytes its policy counts, ``need``, and its process's
inbox, ``wake``). A state written without them reads as before: its ``holder`` is the one
holder, and a request's need is what it declared.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from ...._events import Priority
from ..._tickets import Owner, Ticket
from .._teardown import Teardown

__all__ = ["Entry", "HolderRecord", "State", "StateError", "Teardown"]

_DECODED = 1024
"""Requests whose decoded entry is kept: a request's fields never change while it lives, and
every decision reads every request, so building each one anew made a decision's cost grow
with the line (half of it with 16 waiting)."""


class StateError(Exception):
    """The lease's files cannot be read, written or trusted; nothing may be granted."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A request (waiting or holding) as every process sees it."""

    seq: int
    ticket: Ticket
    enqueued_at: float
    need: int | None = None
    """The GPU memory its policy counts for it, resolved in its own process (None: unknown)."""
    wake: str | None = None
    """Where its process is woken when another process grants it (:mod:`._wake`)."""

    @property
    def hold_timeout_s(self) -> float | None:
        """How long it may hold once granted (None: no limit)."""
        return self.ticket.hold_timeout_s


HolderRecord = tuple[int, float, float | None]
"""The holder: its entry's ``seq``, when it was granted, since when it hangs."""


@dataclass(slots=True)
class State:
    """The lease: the next ticket number, the holders, every request, a dead holder's teardown.

    Requests are keyed by ``seq``; ``holders`` are the grants, oldest first (one at most under
    the exclusive policy); while ``teardown`` is set nobody is granted.
    """

    next_seq: int
    holders: list[HolderRecord] = field(default_factory=list)
    requests: dict[int, Entry] = field(default_factory=dict)
    teardown: Teardown | None = None

    @property
    def holder(self) -> HolderRecord | None:
        """The oldest holder (the only one under the exclusive policy)."""
        return self.holders[0] if self.holders else None

    def holding(self, seq: int) -> HolderRecord | None:
        """Request ``seq``'s grant, if it holds."""
        return next((h for h in self.holders if h[0] == seq), None)

    def waiting(self) -> int:
        """How many requests wait (every request that does not hold)."""
        return len(self.requests) - len(self.holders)

    def encode(self) -> bytes:
        """The state as JSON bytes."""
        requests = {str(seq): _fields(entry) for seq, entry in self.requests.items()}
        counted = {str(seq): [e.need, e.wake] for seq, e in self.requests.items()}
        raw = {
            "next": self.next_seq,
            "holder": self.holder,
            "holders": self.holders,
            "requests": requests,
            "counted": counted,
            "teardown": self.teardown,
        }
        return json.dumps(raw, separators=(",", ":")).encode()

    @staticmethod
    def decode(raw: bytes) -> State:
        """Parse :meth:`encode`'s bytes; :class:`StateError` if they are not such a state."""
        try:
            data = json.loads(raw)
            holder, teardown = data["holder"], data.get("teardown")
            holders = data.get("holders", [] if holder is None else [holder])
            counted = data.get("counted", {})
            requests = data["requests"].items()
            state = State(
                int(data["next"]),
                [_holder(record) for record in holders],
                {int(seq): _entry(int(seq), fields, counted.get(seq)) for seq, fields in requests},
                None if teardown is None else _teardown(teardown),
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise StateError(f"unparsable ({len(raw)} bytes: {type(exc).__name__})") from exc
        seqs = [record[0] for record in state.holders]
        if any(seq not in state.requests for seq in seqs) or len(set(seqs)) != len(seqs):
            raise StateError("inconsistent (a holder is not one of its requests)")
        if any(seq >= state.next_seq for seq in state.requests):
            raise StateError("inconsistent (a request numbered beyond the counter)")
        return state


def _teardown(raw: list[Any]) -> Teardown:
    pid, host, since = raw
    return (int(pid), str(host), float(since))


def _holder(raw: list[Any]) -> HolderRecord:
    seq, granted_at, hung_since = raw
    return (int(seq), float(granted_at), None if hung_since is None else float(hung_since))


def _fields(entry: Entry) -> list[object]:
    ticket, owner = entry.ticket, entry.ticket.owner
    return [
        ticket.lease_id,
        ticket.operation,
        ticket.model,
        int(ticket.priority),
        owner.pid,
        owner.host,
        owner.process,
        entry.enqueued_at,
        ticket.hold_timeout_s,
        ticket.memory_bytes,
    ]


def _entry(seq: int, fields: list[Any], counted: list[Any] | None) -> Entry:
    """Request ``seq``'s entry from its raw fields, decoded once per request.

    ``TypeError`` if they are not lists of plain values: the state is unparsable then.
    """
    return _decoded(seq, tuple(fields), None if counted is None else tuple(counted))


@functools.lru_cache(maxsize=_DECODED)
def _decoded(seq: int, fields: tuple[Any, ...], counted: tuple[Any, ...] | None) -> Entry:
    lease_id, operation, model, priority, pid, host, process, enqueued_at, hold_s, memory = fields
    need, wake = counted if counted is not None else (memory, None)  # older: what it declared
    ticket = Ticket(
        int(lease_id),
        str(operation),
        None if model is None else str(model),
        Priority(int(priority)),
        Owner(int(pid), str(host), str(process)),
        None if memory is None else int(memory),
        hold_timeout_s=None if hold_s is None else float(hold_s),
    )
    return Entry(
        seq,
        ticket,
        float(enqueued_at),
        None if need is None else int(need),
        None if wake is None else str(wake),
    )
