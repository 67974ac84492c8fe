"""Events are built only when something takes them; what anyone sees stays the same.

A guard publishes each transition lazily (:meth:`EventBus.publish_lazily`): the event is
built at once for a subscriber or a listener that wants its level, kept unbuilt in the
history otherwise and built (once) when the history is read. The counters count every
transition either way.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any

import pytest

from gpuguard import EventBus, GpuEvent, GpuGuard, GpuStatus, Priority
from gpuguard._events import Event, JobEvent
from gpuguard.guard._tickets import Grant, Owner, Ticket

from ._support import MakeGuard, gpu_events


def _job(status: str) -> JobEvent:
    return JobEvent(job_id="j1", job="rag-indexing", status=status, timestamp=1.0)


class Builds:
    """A builder of job events that counts how many it built."""

    def __init__(self) -> None:
        self.built = 0

    def __call__(self, status: str) -> Event:
        self.built += 1
        return _job(status)


def test_an_event_nobody_takes_is_not_built_and_the_history_builds_it_once() -> None:
    bus = EventBus()
    build = Builds()
    bus.add_listener(lambda event: None, wants=lambda level: level >= logging.WARNING)
    bus.publish_lazily(logging.INFO, build, "started")
    bus.publish_lazily(logging.INFO, build, "progress")
    assert (build.built, bus.published) == (0, 2)

    first = bus.history()
    assert first == [_job("started"), _job("progress")]
    assert build.built == 2
    again = bus.history()
    assert build.built == 2  # built once: the same objects every time
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert bus.history(kinds={"gpu"}) == []


def test_no_history_and_no_receiver_builds_nothing() -> None:
    bus = EventBus(history_size=0)
    build = Builds()
    bus.publish_lazily(logging.ERROR, build, "failed")
    assert (build.built, bus.published, bus.history()) == (0, 1, [])


def test_a_receiver_gets_the_event_built_once_and_the_history_keeps_that_one() -> None:
    bus = EventBus()
    build = Builds()
    heard: list[Event] = []
    bus.add_listener(heard.append, wants=lambda level: level >= logging.WARNING)
    bus.publish_lazily(logging.WARNING, build, "failed")  # the listener wants it
    with bus.subscribe() as subscription:
        bus.publish_lazily(logging.DEBUG, build, "progress")  # a subscriber takes anything
        queued = subscription.drain()
    unwanted = Builds()
    bus.add_listener(heard.append)  # the same listener without ``wants``: every event now
    bus.publish_lazily(logging.DEBUG, unwanted, "completed")

    assert (build.built, unwanted.built) == (2, 1)
    assert heard == [_job("failed"), _job("progress"), _job("completed")]
    assert queued == [heard[1]]
    assert all(a is b for a, b in zip(bus.history(), heard, strict=True))


async def test_a_quiet_guard_builds_no_event_and_still_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[GpuEvent] = []
    original = GpuEvent.__init__

    def counting(self: GpuEvent, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(GpuEvent, "__init__", counting)
    guard = GpuGuard(f"quiet-{id(built)}", events=EventBus(history_size=0))
    for _ in range(3):
        async with guard.hold("embed"):
            pass
    with pytest.raises(ValueError, match="boom"):
        async with guard.hold("embed"):
            raise ValueError("boom")  # a failure is logged (WARNING): built for the log

    counters = guard.snapshot().counters
    assert (counters.acquired, counters.completed, counters.failed) == (4, 3, 1)
    assert [event.status for event in built] == [GpuStatus.FAILED]
    assert guard.events.published == 8


async def test_a_subscriber_that_joins_after_some_holds_sees_what_it_saw_before(
    make_guard: MakeGuard,
) -> None:
    """The history's events built late equal those a subscriber gets built at once."""
    guard = make_guard()
    for name in ("a", "b"):
        async with guard.hold(name, model="m"):
            pass
    late = guard.events.history(kinds={"gpu"})
    with guard.events.subscribe() as subscription:
        for name in ("a", "b"):
            async with guard.hold(name, model="m"):
                pass
        seen = gpu_events(subscription)

    def without_ids(event: Event) -> dict[str, Any]:
        data = event.to_dict()
        del data["lease_id"], data["timestamp"]
        return data

    assert [without_ids(event) for event in late] == [without_ids(event) for event in seen]
    history = guard.events.history(kinds={"gpu"})
    assert history[:4] == late
    assert all(a is b for a, b in zip(history[4:], seen, strict=True))


async def test_routine_events_reach_the_log_at_its_level(
    make_guard: MakeGuard, caplog: pytest.LogCaptureFixture
) -> None:
    guard = make_guard()
    async with guard.hold("quiet"):
        pass
    assert "quiet" not in caplog.text
    caplog.set_level(logging.INFO, logger="gpuguard.guard")
    async with guard.hold("loud", model="m"):
        pass
    assert "acquired: op=loud model=m" in caplog.text
    assert "released: op=loud model=m outcome=completed" in caplog.text


@pytest.mark.parametrize("record", [Ticket, Grant])
def test_the_request_records_are_frozen_dataclasses_made_with_every_field(record: type) -> None:
    """Their one-step ``__init__`` takes exactly their fields, with the same defaults."""
    parameters = list(inspect.signature(record).parameters.values())
    fields = dataclasses.fields(record)
    assert [p.name for p in parameters] == [f.name for f in fields]
    assert [p.default for p in parameters] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields
    ]


def test_a_ticket_and_a_grant_behave_as_frozen_dataclasses() -> None:
    owner = Owner.this_process()
    ticket = Ticket(7, "chat", "qwen", Priority.NORMAL, owner, hold_timeout_s=5.0)
    assert ticket == Ticket(7, "chat", "qwen", Priority.NORMAL, owner, hold_timeout_s=9.0)
    assert hash(ticket) == hash(dataclasses.replace(ticket, hold_timeout_s=None))
    assert dataclasses.asdict(ticket)["memory_bytes"] is None
    assert dataclasses.replace(ticket, model="m").model == "m"
    grant = Grant(ticket, 2.0)
    assert dataclasses.replace(grant, hung_since=3.0) == Grant(ticket, 2.0, hung_since=3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ticket.model = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        grant.fence = 1  # type: ignore[misc]
