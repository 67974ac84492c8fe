"""The waiting line on its own: service order, places in line, and what a place costs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuguard import GpuEvent, GpuGuard, Priority
from gpuguard.guard import _queue
from gpuguard.guard._queue import QueueEntry, WaiterQueue

AGING_S = 10.0


def _served_order(queue: WaiterQueue[int], now: float) -> list[int]:
    """The line's order as the definition states it: sort every waiter by rank."""
    entries = list(queue)
    entries.sort(key=lambda e: (queue.effective_priority(e, now), -e.ticket), reverse=True)
    return [e.ticket for e in entries]


# One step: ("join", priority, seconds later), ("leave", which waiter), ("serve",).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.sampled_from(list(Priority)), st.floats(0.0, 15.0)),
        st.tuples(st.just("leave"), st.integers(0, 1_000)),
        st.tuples(st.just("serve")),
    ),
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, aging=st.sampled_from([AGING_S, None]))
def test_places_and_service_match_the_definition(
    steps: list[tuple[object, ...]], aging: float | None
) -> None:
    queue: WaiterQueue[int] = WaiterQueue(aging_s=aging)
    waiting: list[QueueEntry[int]] = []
    now, ticket = 0.0, 0
    for step in steps:
        if step[0] == "join":
            now += float(step[2])  # type: ignore[arg-type]
            ticket += 1
            waiting.append(queue.push(ticket, step[1], now, ticket))  # type: ignore[arg-type]
        elif step[0] == "leave" and waiting:
            entry = waiting.pop(int(step[1]) % len(waiting))  # type: ignore[call-overload]
            assert queue.remove(entry)
            assert not queue.remove(entry)
        elif step[0] == "serve" and waiting:
            expected = _served_order(queue, now)[0]
            served = queue.pop_next(now)
            assert served.ticket == expected
            waiting.remove(served)
        order = _served_order(queue, now)
        assert [e.ticket for e in queue.order(now)] == order
        assert {queue.position(e, now) for e in waiting} == set(range(1, len(waiting) + 1))
        assert [e.ticket for e in sorted(waiting, key=lambda e: queue.position(e, now))] == order
        assert len(queue) == len(waiting)


def test_a_place_is_also_found_among_stamps_out_of_order() -> None:
    # Another process may stamp its ticket a moment before an earlier ticket's stamp.
    queue: WaiterQueue[int] = WaiterQueue(aging_s=AGING_S)
    late = queue.push(1, Priority.BACKGROUND, 5.0, 1)
    early = queue.push(2, Priority.BACKGROUND, 0.0, 2)
    normal = queue.push(3, Priority.NORMAL, 11.0, 3)
    # At 11 s the second has aged to normal (ahead of the third), the first has not.
    assert [queue.position(e, 11.0) for e in (late, early, normal)] == [3, 1, 2]


def test_a_waiter_that_left_has_no_place() -> None:
    queue: WaiterQueue[int] = WaiterQueue(aging_s=None)
    entry = queue.push(1, Priority.NORMAL, 0.0, 1)
    queue.remove(entry)
    with pytest.raises(ValueError, match="not in line"):
        queue.position(entry, 0.0)


async def test_joining_a_long_line_does_not_walk_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'waiting' event's place costs O(log n) rank reads, not one per waiter."""
    guard = GpuGuard(max_waiters=2_000)
    lease = await guard.acquire("holder")
    holds = [guard.hold("w", priority=Priority(i % 3)) for i in range(1_000)]
    for hold in holds:
        await hold.reserve()
    reads = 0
    real = _queue.effective_priority

    def counted(*args: object) -> Priority:
        nonlocal reads
        reads += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_queue, "effective_priority", counted)
    last = guard.hold("last", priority=Priority.NORMAL)
    assert await last.reserve()
    assert reads <= 100
    (waiting,) = [
        e for e in guard.events.history() if isinstance(e, GpuEvent) and e.operation == "last"
    ]
    ahead = [i for i in range(1_000) if i % 3 >= Priority.NORMAL]  # interactive and normal
    assert waiting.position == len(ahead) + 1
    for hold in [*holds, last]:
        await hold.aclose()
    lease.release()
