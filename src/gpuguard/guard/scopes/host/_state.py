"""The host-wide lease's state: what every process reads and writes under the lock.

Pure data and its encoding. A state that does not parse is an error (:class:`StateError`),
never a free GPU: the directory (:mod:`._lease_dir`) decides whether it can be rebuilt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...._events import Priority
from ..._tickets import Owner, Ticket

__all__ = ["Entry", "HolderRecord", "State", "StateError", "Teardown"]


class StateError(Exception):
    """The lease's files cannot be read, written or trusted; nothing may be granted."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A request (waiting or holding) as every process sees it."""

    seq: int
    ticket: Ticket
    enqueued_at: float

    @property
    def hold_timeout_s(self) -> float | None:
        """How long it may hold once granted (None: no limit)."""
        return self.ticket.hold_timeout_s


HolderRecord = tuple[int, float, float | None]
"""The holder: its entry's ``seq``, when it was granted, since when it hangs."""


Teardown = tuple[int, str, float]
"""A dead holder whose GPU memory may still be in use: its pid, its host, since when."""


@dataclass(slots=True)
class State:
    """The lease: the next ticket number, the holder, every request, a dead holder's teardown.

    Requests are keyed by ``seq``; while ``teardown`` is set nobody is granted.
    """

    next_seq: int
    holder: HolderRecord | None = None
    requests: dict[int, Entry] = field(default_factory=dict)
    teardown: Teardown | None = None

    def encode(self) -> bytes:
        """The state as JSON bytes."""
        requests = {str(seq): _fields(entry) for seq, entry in self.requests.items()}
        raw = {
            "next": self.next_seq,
            "holder": self.holder,
            "requests": requests,
            "teardown": self.teardown,
        }
        return json.dumps(raw, separators=(",", ":")).encode()

    @staticmethod
    def decode(raw: bytes) -> State:
        """Parse :meth:`encode`'s bytes; :class:`StateError` if they are not such a state."""
        try:
            data = json.loads(raw)
            holder, teardown = data["holder"], data.get("teardown")
            state = State(
                int(data["next"]),
                None if holder is None else _holder(holder),
                {int(seq): _entry(int(seq), fields) for seq, fields in data["requests"].items()},
                None if teardown is None else _teardown(teardown),
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise StateError(f"unparsable ({len(raw)} bytes: {type(exc).__name__})") from exc
        if state.holder is not None and state.holder[0] not in state.requests:
            raise StateError("inconsistent (its holder is not one of its requests)")
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


def _entry(seq: int, fields: list[Any]) -> Entry:
    lease_id, operation, model, priority, pid, host, process, enqueued_at, hold_s, memory = fields
    ticket = Ticket(
        int(lease_id),
        str(operation),
        None if model is None else str(model),
        Priority(int(priority)),
        Owner(int(pid), str(host), str(process)),
        None if memory is None else int(memory),
        hold_timeout_s=None if hold_s is None else float(hold_s),
    )
    return Entry(seq, ticket, float(enqueued_at))
