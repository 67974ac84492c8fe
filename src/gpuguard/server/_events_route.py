"""``GET /events``: every gpu, job and model event as Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sse_starlette import EventSourceResponse

from .._events import Event, EventBus
from ._context import ServerContext, get_context

__all__ = ["EVENT_KINDS", "router"]

EVENT_KINDS = frozenset({"gpu", "job", "model"})

router = APIRouter(tags=["events"])


@router.get("/events")
async def events(
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
    return EventSourceResponse(_frames(context.gateway.events, wanted, history), ping=15)


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
