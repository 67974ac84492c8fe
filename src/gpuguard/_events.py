"""Typed status events and the bounded fan-out bus that carries them.

Every layer publishes to one :class:`EventBus`: the guard (``kind="gpu"``), jobs
(``kind="job"``) and the gateway (``kind="model"``). Subscribers (the SSE route, the CLI's
live view, metrics, tests) each get a bounded queue: a slow subscriber never blocks the
publisher; when its queue is full the oldest event is dropped and counted.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Protocol, cast

logger = logging.getLogger("gpuguard.events")

__all__ = [
    "Event",
    "EventBus",
    "GpuEvent",
    "GpuStatus",
    "JobEvent",
    "ModelEvent",
    "Priority",
    "Subscription",
]


class Priority(enum.IntEnum):
    """Who goes first when the GPU frees: higher values are served first."""

    BACKGROUND = 0
    NORMAL = 1
    INTERACTIVE = 2

    def __str__(self) -> str:
        return self.name.lower()


class GpuStatus(enum.StrEnum):
    """What just happened to a GPU operation.

    ``hung``: it held the GPU past its hold timeout and is being stopped; until its work
    really ends the GPU stays quarantined (shown as held by it). ``recovered``: that work has
    ended and the GPU is free again. ``fallback``: a bulk batch ran on the CPU instead.
    """

    WAITING = "waiting"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    HUNG = "hung"
    RECOVERED = "recovered"
    REJECTED = "rejected"
    FALLBACK = "fallback"


class Event(Protocol):
    """Anything the bus carries: a kind and a JSON-ready dict."""

    @property
    def kind(self) -> str:
        """``gpu``, ``job`` or ``model``."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view of the event."""


@dataclass(frozen=True, slots=True)
class GpuEvent:
    """One transition of one GPU operation, as reported by a guard.

    ``waited_s`` is the time spent queued so far, ``held_s`` the time the lease was held
    (0 until started). ``position`` is the 1-based queue position for ``waiting`` events and
    ``holder`` names the operation holding the GPU at the time (for ``waiting``, ``timed_out``
    and ``rejected``). ``pid`` and ``host`` name the process the operation runs in (the
    guard's scope may span processes and hosts).
    """

    guard: str
    operation: str
    model: str | None
    status: GpuStatus
    timestamp: float
    lease_id: int
    priority: Priority
    waited_s: float = 0.0
    held_s: float = 0.0
    position: int | None = None
    holder: str | None = None
    detail: str = ""
    pid: int | None = None
    host: str | None = None

    @property
    def kind(self) -> str:
        """Always ``gpu``."""
        return "gpu"

    def to_dict(self) -> dict[str, Any]:
        """``{"operation", "model", "status", ...}`` with plain JSON types."""
        data = asdict(self)
        data["status"] = str(self.status)
        data["priority"] = str(self.priority)
        return {"kind": "gpu", **data}

    def to_json(self) -> str:
        """The event as one line of JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __str__(self) -> str:
        model = f" [{self.model}]" if self.model else ""
        return f"{self.status}: {self.operation}{model}"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """Progress of a long job (schema refresh, RAG indexing).

    ``job`` names what the job does (``schema-refresh``, ``rag-indexing``); the dict's
    ``kind`` is always the event kind ``job``. ``status`` is one of ``started``,
    ``progress``, ``completed``, ``failed``, ``cancelled``; ``done``/``total`` count the
    job's units (tables, files, batches; ``total`` may be unknown). ``issue`` is set on the
    event that skipped a source (``"broken.pdf: not a PDF"``), so that viewers can keep the
    list of problems after the job ends.
    """

    job_id: str
    job: str
    status: str
    timestamp: float
    done: int = 0
    total: int | None = None
    detail: str = ""
    issue: str = ""

    @property
    def kind(self) -> str:
        """Always ``job``."""
        return "job"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"kind": "job", **asdict(self)}


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """A model changed state on a backend.

    ``status`` is one of ``loading``, ``loaded``, ``unloading``, ``unloaded``, ``prewarming``,
    ``ready``, ``failed``.
    """

    model: str
    status: str
    backend: str
    timestamp: float
    detail: str = ""

    @property
    def kind(self) -> str:
        """Always ``model``."""
        return "model"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"kind": "model", **asdict(self)}


class Subscription:
    """One subscriber's bounded queue of events; iterate it with ``async for``."""

    def __init__(self, bus: EventBus, maxsize: int, kinds: frozenset[str] | None) -> None:
        self._bus = bus
        self._kinds = kinds
        self._events: deque[Event] = deque(maxlen=maxsize)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.maxsize = maxsize
        self.dropped = 0

    def _offer(self, event: Event) -> bool:
        """Queue ``event``; returns False when an old event had to be dropped for it."""
        if self._kinds is not None and event.kind not in self._kinds:
            return True
        full = len(self._events) == self.maxsize
        if full:
            self.dropped += 1
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return not full

    def get_nowait(self) -> Event | None:
        """The oldest queued event, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    def drain(self) -> list[Event]:
        """Every queued event, oldest first, emptying the queue."""
        events = list(self._events)
        self._events.clear()
        return events

    async def get(self) -> Event:
        """Wait for the next event. Raises :class:`EOFError` once the subscription is closed."""
        while not self._events:
            if self._closed:
                raise EOFError("subscription closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()

    def close(self) -> None:
        """Stop receiving events and wake a pending :meth:`get`."""
        if self._closed:
            return
        self._closed = True
        self._bus._unsubscribe(self)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.get()
            except EOFError:
                return

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Subscription queued={len(self._events)}/{self.maxsize} "
            f"dropped={self.dropped} closed={self._closed}>"
        )


_Unbuilt = tuple[Callable[..., Event], tuple[Any, ...]]
"""An event published lazily that nobody has taken yet: what builds it, and with what.

A plain ``tuple`` (``type(entry) is tuple``): no event is one, since an event has a ``kind``.
"""


class EventBus:
    """Fan-out of events to bounded subscriber queues, plus a short history.

    :meth:`publish` never blocks and never raises: it is called from inside the guard.
    ``history`` keeps the last ``history_size`` events so that a late subscriber (a web page
    opened mid-job) can draw a timeline.
    """

    def __init__(self, *, history_size: int = 256, default_maxsize: int = 1000) -> None:
        if history_size < 0 or default_maxsize < 1:
            raise ValueError("history_size must be >= 0 and default_maxsize >= 1")
        self._subscribers: list[Subscription] = []
        self._listeners: dict[Callable[[Event], None], Callable[[int], bool] | None] = {}
        """Each listener, with what tells whether it would use an event of a level."""
        self._history: deque[Event | _Unbuilt] = deque(maxlen=history_size)
        self._default_maxsize = default_maxsize
        self.published = 0
        self.dropped = 0

    def publish(self, event: Event) -> None:
        """Give ``event`` to every listener and subscriber; a full subscriber drops its oldest.

        A listener that raises is logged and skipped: publishing never fails its publisher.
        """
        self.published += 1
        self._history.append(event)
        self._deliver(event)

    def publish_lazily(self, level: int, build: Callable[..., Event], *args: Any) -> None:
        """Publish the event ``build(*args)`` makes, building it only once someone takes it.

        For a publisher on a hot path (a guard's every grant and release). ``level`` (a
        :mod:`logging` level) is what the event is worth to listeners added with ``wants``.
        It is built now, once, for every listener and subscriber, if there is a subscriber,
        a listener added without ``wants``, or one whose ``wants(level)`` is true; else the
        history keeps what builds it, and :meth:`history` builds it (once) when read.
        """
        if not self._subscribers:
            for wants in self._listeners.values():
                if wants is None or wants(level):
                    break
            else:  # nobody takes it now
                self.published += 1
                if self._history.maxlen:
                    self._history.append((build, args))
                return
        self.publish(build(*args))

    def _deliver(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener %r failed", listener)
        for subscriber in self._subscribers:
            if not subscriber._offer(event):
                self.dropped += 1

    def add_listener(
        self, listener: Callable[[Event], None], *, wants: Callable[[int], bool] | None = None
    ) -> None:
        """Call ``listener(event)`` synchronously for every event published from now on.

        For quick, non-blocking consumers (logging, counters); adding one twice is a no-op
        (the second ``wants`` counts). ``wants(level)`` says whether the listener would do
        anything with an event of that :mod:`logging` level (say, ``logger.isEnabledFor``):
        when no receiver would, :meth:`publish_lazily` does not build the event.
        """
        self._listeners[listener] = wants

    def remove_listener(self, listener: Callable[[Event], None]) -> None:
        """Stop calling ``listener``; harmless if it was not added."""
        self._listeners.pop(listener, None)

    def subscribe(
        self, *, maxsize: int | None = None, kinds: Iterable[str] | None = None
    ) -> Subscription:
        """A new subscription receiving every event published from now on.

        ``kinds`` limits it to some event kinds (``{"gpu"}``); ``maxsize`` bounds its queue.
        """
        size = self._default_maxsize if maxsize is None else maxsize
        if size < 1:
            raise ValueError("maxsize must be >= 1")
        subscription = Subscription(self, size, None if kinds is None else frozenset(kinds))
        self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def history(self, *, kinds: Iterable[str] | None = None) -> list[Event]:
        """The most recent events, oldest first (optionally only some kinds)."""
        if any(type(entry) is tuple for entry in self._history):
            built = [_built(entry) for entry in self._history]
            self._history = deque(built, maxlen=self._history.maxlen)  # each is built once
        events = cast("list[Event]", list(self._history))
        if kinds is None:
            return events
        wanted = frozenset(kinds)
        return [event for event in events if event.kind in wanted]

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    def __repr__(self) -> str:
        return (
            f"<EventBus subscribers={len(self._subscribers)} published={self.published} "
            f"dropped={self.dropped}>"
        )


def _built(entry: Event | _Unbuilt) -> Event:
    """The event of a history entry, built if it was published lazily."""
    if type(entry) is tuple:
        build, args = entry
        return build(*args)
    return cast(Event, entry)
