"""The waiting line for a GPU: priorities, first come first served, aging. Pure, no event loop.

Service order (the fairness promise, tested on its own and through every guard scope):

* a higher *effective* priority is served first;
* within one effective priority, the earlier ticket is served first (FIFO);
* with aging, a waiter's effective priority rises one level for every ``aging_s`` seconds it has
  waited (capped at interactive), so background work is never starved for ever.

The line keeps one FIFO per declared priority: with aging, the head of each FIFO is always the
best candidate of its priority, so choosing the next waiter compares three heads. Joining,
leaving from anywhere and being served cost O(log n) at most, and so does a waiter's place in
line: along one FIFO the rank falls (later tickets, waited less), so the waiters of each FIFO
ahead of a given one are a prefix found by bisecting its stamps and tickets, counted by a
Fenwick tree of who is still in line (those who left are skipped, and dropped once they
outnumber the rest).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from .._events import Priority

__all__ = ["QueueEntry", "WaiterQueue", "effective_priority"]

T = TypeVar("T")

# Timer callbacks may run up to the loop's clock resolution early; treat that as "due".
DUE_EPSILON: Final = 1e-6

# A FIFO is rebuilt without its departed waiters once they outnumber these and the rest.
_SLACK: Final = 32


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
    slot: int = field(default=0, repr=False)
    """Its 1-based index in its FIFO (internal to the queue)."""


class _Fifo(Generic[T]):
    """One priority's waiters in arrival order; those who left stay as gaps until a rebuild."""

    __slots__ = ("_counts", "entries", "head", "live", "ordered", "stamps", "tickets")

    def __init__(self) -> None:
        self.entries: list[QueueEntry[T]] = []
        self.stamps: list[float] = []
        """``enqueued_at`` of each entry, and below its ticket: bisected in C, no key calls."""
        self.tickets: list[int] = []
        self._counts: list[int] = [0]
        """Fenwick tree over ``entries`` (1-based): 1 for each waiter still in line."""
        self.head = 0
        """Index of the first waiter still in line (every entry before it has left)."""
        self.live = 0
        self.ordered = True
        """True while ``enqueued_at`` never decreases along the FIFO (bisection is valid)."""

    def append(self, entry: QueueEntry[T]) -> None:
        entries = self.entries
        if entries and entry.enqueued_at < entries[-1].enqueued_at:
            self.ordered = False  # stamped by another process's slightly earlier clock read
        entries.append(entry)
        self.stamps.append(entry.enqueued_at)
        self.tickets.append(entry.ticket)
        slot = entry.slot = len(entries)
        counts, total = self._counts, 1
        below, stop = slot - 1, slot - (slot & -slot)
        while below > stop:
            total += counts[below]
            below -= below & -below
        counts.append(total)
        self.live += 1

    def discard(self, entry: QueueEntry[T]) -> None:
        """``entry`` (in line here) leaves."""
        counts, slot = self._counts, entry.slot
        while slot < len(counts):
            counts[slot] -= 1
            slot += slot & -slot
        entry.queued = False
        self.live -= 1
        entries = self.entries
        if not self.live:
            self.entries, self.stamps, self.tickets, self._counts = [], [], [], [0]
            self.head, self.ordered = 0, True
        elif len(entries) - self.live > max(_SLACK, self.live):
            self._rebuild()
        else:
            while not entries[self.head].queued:
                self.head += 1

    def first(self) -> QueueEntry[T]:
        return self.entries[self.head]

    def count_before(self, index: int) -> int:
        """How many of ``entries[:index]`` are still in line."""
        counts, total = self._counts, 0
        while index:
            total += counts[index]
            index -= index & -index
        return total

    def _rebuild(self) -> None:
        self.entries = [e for e in self.entries[self.head :] if e.queued]
        self.stamps = [e.enqueued_at for e in self.entries]
        self.tickets = [e.ticket for e in self.entries]
        counts = [0] * (len(self.entries) + 1)
        for slot, entry in enumerate(self.entries, 1):
            entry.slot = slot
            counts[slot] += 1
            parent = slot + (slot & -slot)
            if parent < len(counts):
                counts[parent] += counts[slot]
        self._counts, self.head = counts, 0

    def __iter__(self) -> Iterator[QueueEntry[T]]:
        return (e for e in self.entries[self.head :] if e.queued)


class WaiterQueue(Generic[T]):
    """Waiters in service order: by effective priority (with aging), FIFO within a priority.

    Tickets must increase in arrival order; ``now`` is passed in by the caller, so the queue
    is a plain data structure, testable without a clock or an event loop.
    """

    def __init__(self, *, aging_s: float | None) -> None:
        if aging_s is not None and not aging_s > 0:
            raise ValueError("aging_s must be > 0, or None to disable aging")
        self.aging_s = aging_s
        self._lines: dict[Priority, _Fifo[T]] = {p: _Fifo() for p in Priority}
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
        self._lines[entry.priority].discard(entry)
        self._size -= 1
        return True

    def peek_next(self, now: float) -> QueueEntry[T]:
        """The waiter to serve next, left in line. Raises IndexError when empty."""
        heads = [line.first() for line in self._lines.values() if line.live]
        if not heads:
            raise IndexError("peek into an empty WaiterQueue")
        return max(heads, key=lambda entry: self._rank(entry, now))

    def pop_next(self, now: float) -> QueueEntry[T]:
        """Remove and return the waiter to serve next. Raises IndexError when empty."""
        if not self._size:
            raise IndexError("pop from an empty WaiterQueue")
        best = self.peek_next(now)
        self.remove(best)
        return best

    def order(self, now: float) -> list[QueueEntry[T]]:
        """Every waiter, in the order they would be served from ``now`` on."""
        entries = list(self)
        entries.sort(key=lambda entry: self._rank(entry, now), reverse=True)
        return entries

    def position(self, entry: QueueEntry[T], now: float) -> int:
        """``entry``'s 1-based place in the service order, found without walking the line."""
        if not entry.queued:
            raise ValueError("the entry is not in line")
        level = self.effective_priority(entry, now)
        ahead = 0
        for priority, line in self._lines.items():
            if not line.live:
                continue
            if priority > level:
                ahead += line.live  # it has not aged down: every one of them goes first
            elif not line.ordered:
                rank = (level, -entry.ticket)
                ahead += sum(1 for e in line if self._rank(e, now) > rank)
            else:
                # Along a FIFO the rank only falls: those ahead of ``entry`` are a prefix:
                # the ones aged above its level, and those aged to it with an earlier ticket.
                tied = min(
                    self._aged(line, priority, level, now),
                    bisect_left(line.tickets, entry.ticket, line.head),
                )
                ahead += line.count_before(max(self._aged(line, priority, level + 1, now), tied))
        return ahead + 1

    def _aged(self, line: _Fifo[T], priority: Priority, level: int, now: float) -> int:
        """How far along ``line`` (of ``priority``) waiters have aged to ``level`` or above."""
        steps = level - priority
        if steps <= 0:
            return len(line.entries)
        if self.aging_s is None or level > Priority.INTERACTIVE:
            return line.head
        aging_s, stamps = self.aging_s, line.stamps
        end = bisect_right(stamps, now + DUE_EPSILON - steps * aging_s, line.head)
        # The bisection's float arithmetic may land one off :func:`effective_priority`'s.
        while end < len(stamps) and (max(0.0, now - stamps[end]) + DUE_EPSILON) // aging_s >= steps:
            end += 1
        while (
            end > line.head and (max(0.0, now - stamps[end - 1]) + DUE_EPSILON) // aging_s < steps
        ):
            end -= 1
        return end

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
        sizes = ", ".join(f"{p}={line.live}" for p, line in self._lines.items())
        return f"<WaiterQueue {sizes}>"
