"""The host arbiter's own rules, in one process."""

from __future__ import annotations

from gpuguard import Priority
from gpuguard.guard._queue import effective_priority


def test_a_ticket_stamped_after_now_has_waited_nothing() -> None:
    """Another process may enqueue a moment after this one read the clock; its wait is 0,
    not negative (which once raised ValueError inside the guard and leaked a queue entry)."""
    assert effective_priority(Priority.BACKGROUND, 10.0, 9.999, 1.0) is Priority.BACKGROUND
    assert effective_priority(Priority.BACKGROUND, 10.0, 11.0, 1.0) is Priority.NORMAL
