"""The host arbiter's own rules, in one process."""

from __future__ import annotations

import json
import os

from gpuguard import Priority
from gpuguard.guard._queue import effective_priority
from gpuguard.guard._tickets import Owner
from gpuguard.guard.scopes.host._state import State


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


def test_a_request_number_that_comes_back_is_decoded_anew() -> None:
    """A rebuilt state numbers requests on from the entries left, so a number can come back
    with another request: decoded requests are kept by their whole fields, not their number."""
    one = [7, "chat", "m", 1, 42, "h", "p", 1.5, None, None]
    other = [8, "train", None, 2, 43, "h", "p", 2.5, 3.0, None]
    for fields in (one, other, one):
        raw = {"next": 1, "holder": None, "requests": {"0": fields}}
        ticket = State.decode(json.dumps(raw).encode()).requests[0].ticket
        assert (ticket.lease_id, ticket.operation, ticket.hold_timeout_s) == (
            fields[0],
            fields[1],
            fields[8],
        )
