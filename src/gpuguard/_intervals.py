"""Record the intervals in which something used the GPU, and find overlaps between them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["GpuInterval", "IntervalRecorder"]


@dataclass(frozen=True, slots=True)
class GpuInterval:
    """``who`` did ``what`` on the GPU from ``start`` to ``end`` (monotonic seconds)."""

    who: str
    what: str
    start: float
    end: float

    def overlaps(self, other: GpuInterval) -> bool:
        """True when the two intervals share any instant."""
        return self.start < other.end and other.start < self.end


class IntervalRecorder:
    """Thread-safe log of GPU-work intervals, shared by protocol doubles and test embedders.

    Tests assert ``recorder.overlaps() == []``: no two pieces of GPU work ran at once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._intervals: list[GpuInterval] = []
        self._active = 0
        self.max_active = 0

    @contextmanager
    def record(self, who: str, what: str) -> Iterator[None]:
        """Record the body of the ``with`` block as one interval."""
        start = self._clock()
        with self._lock:
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        try:
            yield
        finally:
            end = self._clock()
            with self._lock:
                self._active -= 1
                self._intervals.append(GpuInterval(who, what, start, end))

    @property
    def intervals(self) -> list[GpuInterval]:
        """Every finished interval, by start time."""
        with self._lock:
            return sorted(self._intervals, key=lambda i: i.start)

    def overlaps(self) -> list[tuple[GpuInterval, GpuInterval]]:
        """Every pair of intervals that overlap (empty when GPU work was serialised)."""
        ordered = self.intervals
        pairs = []
        for i, first in enumerate(ordered):
            for second in ordered[i + 1 :]:
                if second.start >= first.end:
                    break
                pairs.append((first, second))
        return pairs

    def clear(self) -> None:
        """Forget every interval."""
        with self._lock:
            self._intervals.clear()
            self.max_active = self._active
