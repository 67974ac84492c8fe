"""The waiting line for a GPU: priorities, first come first served, aging. Pure, no event loop.

Service order (the fairness promise, tested on its own and through every guard scope):

* a higher *effective* priority is served first;
* within one effective priority, the earlier ticket is served first (FIFO);
* with aging, a waiter's effective priority rises one level for every ``aging_s`` seconds it has
  waited (capped at interactive), so background work is never starved for ever.

The line keeps one FIFO per declared priority: with aging, the head of each FIFO is always the
best candidate of its priority, so choosing the next waiter compares three heads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from .._events import Priority

__all__ = ["QueueEntry", "WaiterQueue", "effective_priority"]

T = TypeVar("T")

# Timer callbacks may run up to the loop's clock resolution early; treat that as "due".
DUE_EPSILON: Final = 1e-6


def effective_priority(
    priority: Priority, enqueued_at: float, now: float, aging_s: float | None
) -> Priority:
    """``priority`` raised one level per ``aging_s`` seconds waited since ``enqueued_at``.

    A ticket stamped after ``now`` (by another process, a moment after this one read its
    clock) has waited no time yet.
    """
    if aging_s is None or priority is Priority.INTERACTIVE:
        return priority
    steps = int((max(0.0, now - enqueued_at) + DUE_EPSILON) // aging_s)
    return Priority(min(Priority.INTERACTIVE, priority + steps))


@dataclass(eq=False, slots=True)
class QueueEntry(Generic[T]):
    """One waiter in a :class:`WaiterQueue`: ``ticket`` orders it within its priority."""

    ticket: int
    priority: Priority
    enqueued_at: float
    item: T
    queued: bool = field(default=True)


class WaiterQueue(Generic[T]):
    """Waiters in service order: by effective priority (with aging), FIFO within a priority.

    Tickets must increase in arrival order; ``now`` is passed in by the caller, so the queue
    is a plain data structure, testable without a clock or an event loop.
    """

    def __init__(self, *, aging_s: float | None) -> None:
        if aging_s is not None and not aging_s > 0:
            raise ValueError("aging_s must be > 0, or None to disable aging")
        self.aging_s = aging_s
        self._lines: dict[Priority, deque[QueueEntry[T]]] = {p: deque() for p in Priority}
        self._size = 0

    def push(self, ticket: int, priority: Priority, enqueued_at: float, item: T) -> QueueEntry[T]:
        """Add a waiter at the back of its priority's line."""
        entry = QueueEntry(ticket, Priority(priority), enqueued_at, item)
        self._lines[entry.priority].append(entry)
        self._size += 1
        return entry

    def remove(self, entry: QueueEntry[T]) -> bool:
        """Take ``entry`` out of the line; False if it had already left."""
        if not entry.queued:
            return False
        self._lines[entry.priority].remove(entry)
        entry.queued = False
        self._size -= 1
        return True

    def peek_next(self, now: float) -> QueueEntry[T]:
        """The waiter to serve next, left in line. Raises IndexError when empty."""
        heads = [line[0] for line in self._lines.values() if line]
        if not heads:
            raise IndexError("peek into an empty WaiterQueue")
        return max(heads, key=lambda entry: self._rank(entry, now))

    def pop_next(self, now: float) -> QueueEntry[T]:
        """Remove and return the waiter to serve next. Raises IndexError when empty."""
        if not self._size:
            raise IndexError("pop from an empty WaiterQueue")
        best = self.peek_next(now)
        self._lines[best.priority].popleft()
        best.queued = False
        self._size -= 1
        return best

    def order(self, now: float) -> list[QueueEntry[T]]:
        """Every waiter, in the order they would be served from ``now`` on."""
        entries = [entry for line in self._lines.values() for entry in line]
        entries.sort(key=lambda entry: self._rank(entry, now), reverse=True)
        return entries

    def position(self, entry: QueueEntry[T], now: float) -> int:
        """``entry``'s 1-based place in the service order."""
        return self.order(now).index(entry) + 1

    def effective_priority(self, entry: QueueEntry[T], now: float) -> Priority:
        """``entry``'s priority after aging."""
        return effective_priority(entry.priority, entry.enqueued_at, now, self.aging_s)

    def _rank(self, entry: QueueEntry[T], now: float) -> tuple[int, int]:
        return (self.effective_priority(entry, now), -entry.ticket)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[QueueEntry[T]]:
        return (entry for line in self._lines.values() for entry in line)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{p}={len(line)}" for p, line in self._lines.items())
        return f"<WaiterQueue {sizes}>"
