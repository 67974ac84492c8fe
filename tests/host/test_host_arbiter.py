"""The host arbiter's own rules, in one process."""

from __future__ import annotations

import os

from gpuguard import Priority
from gpuguard.guard._queue import effective_priority
from gpuguard.guard._tickets import Owner


def test_a_ticket_stamped_after_now_has_waited_nothing() -> None:
    """Another process may enqueue a moment after this one read the clock; its wait is 0,
    not negative (which once raised ValueError inside the guard and leaked a queue entry)."""
    assert effective_priority(Priority.BACKGROUND, 10.0, 9.999, 1.0) is Priority.BACKGROUND
    assert effective_priority(Priority.BACKGROUND, 10.0, 11.0, 1.0) is Priority.NORMAL


def test_a_forked_child_names_itself_not_its_parent() -> None:
    """Tickets made in a child of ``fork()`` carry the child's pid (shown to every waiter)."""
    assert Owner.this_process().pid == os.getpid()  # cached in the parent first
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, str(Owner.this_process().pid).encode())
        os._exit(0)
    os.close(write)
    named = int(os.read(read, 32))
    os.close(read)
    os.waitpid(child, 0)
    assert named == child
