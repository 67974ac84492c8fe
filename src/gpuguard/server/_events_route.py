"""``GET /events``: every gpu, job and model event as Server-Sent Events.

Subscribers are bounded (:class:`SubscriberLimit`: in all and per client address); one that
does not read is dropped when a write to it stalls (:mod:`._stalls`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from .._events import Event, EventBus
from ._context import ServerContext, get_context
from ._errors import error_responses

__all__ = ["EVENT_KINDS", "SubscriberLimit", "router"]

RETRY_AFTER_S = 5
"""What a subscriber refused for the bound is told to wait."""


class SubscriberLimit:
    """At most ``total`` open ``/events`` streams, ``per_client`` from one client address."""

    def __init__(self, *, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """Streams open now."""
        return self._open.total()

    def reserve(self, client: str) -> Callable[[], None]:
        """Count one stream of ``client``; returns its release. 503 when a bound is reached."""
        if self.open >= self.total or self._open[client] >= self.per_client:
            raise HTTPException(
                503,
                f"too many event streams open (at most {self.total}, {self.per_client} per "
                "client): close one, or retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._open[client] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open[client] -= 1
                if not self._open[client]:
                    del self._open[client]

        return release


class _CountedStream(EventSourceResponse):
    """An event stream that gives its place back however it ends (even before it starts)."""

    def __init__(
        self, frames: AsyncIterator[dict[str, Any]], *, release: Callable[[], None]
    ) -> None:
        super().__init__(frames, ping=15)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


EVENT_KINDS = frozenset({"gpu", "job", "model"})

router = APIRouter(tags=["events"])


@router.get("/events", responses=error_responses(503))
async def events(
    request: Request,
    context: Annotated[ServerContext, Depends(get_context)],
    kinds: Annotated[str, Query(pattern=r"^(gpu|job|model)(,(gpu|job|model))*$")] = (
        "gpu,job,model"
    ),
    history: bool = False,
) -> EventSourceResponse:
    """Stream events as they are published, each as ``event: <kind>`` with a JSON ``data``.

    The first frame is ``event: ready``: from then on nothing is missed. ``history=true``
    replays the bus's recent events (oldest first) before the live ones.
    """
    wanted = frozenset(kinds.split(","))
    limit: SubscriberLimit = request.app.state.subscribers
    client = request.client.host if request.client else ""
    release = limit.reserve(client)
    return _CountedStream(_frames(context.gateway.events, wanted, history), release=release)


async def _frames(
    bus: EventBus, kinds: frozenset[str], history: bool
) -> AsyncIterator[dict[str, Any]]:
    with bus.subscribe(kinds=kinds) as subscription:
        past = bus.history(kinds=kinds) if history else []
        yield {"event": "ready", "data": json.dumps({"history": len(past)})}
        for event in past:
            yield _frame(event)
        async for event in subscription:
            yield _frame(event)


def _frame(event: Event) -> dict[str, Any]:
    return {"event": event.kind, "data": json.dumps(event.to_dict(), separators=(",", ":"))}
