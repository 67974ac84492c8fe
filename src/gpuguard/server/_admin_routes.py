"""Admin API: the GPU lane, the gateway's status, models and the server's recent log lines."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..guard import GuardSnapshot
from ._context import ServerContext, get_context
from ._errors import error_responses
from ._logs import LogRing

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["admin"])

Context = Annotated[ServerContext, Depends(get_context)]

# What a model operation may answer besides 200: the backend's and the GPU lease's errors.
MODEL_ERRORS = error_responses(404, 409, 502, 503, 504)


class ModelRequest(BaseModel):
    """Names the model to load or unload."""

    model_config = ConfigDict(strict=True)

    model: str = Field(min_length=1, max_length=256)


class PrewarmRequest(BaseModel):
    """Prewarm ``model`` (default: the current one); ``make_current`` then switches to it."""

    model_config = ConfigDict(strict=True)  # JSON types as described: no 0 for false

    model: str | None = Field(default=None, min_length=1, max_length=256)
    make_current: bool = False


@router.get("/gpu")
async def gpu(
    context: Context, recent: Annotated[int, Query(ge=0, le=1000)] = 100
) -> dict[str, Any]:
    """The current operation, the snapshot (queue by priority, counters), recent GPU events.

    ``current`` and ``snapshot`` are the first GPU's; ``gpus`` has every GPU's snapshot,
    each named by its lease (``gpu``).
    """
    gpus = context.gateway.gpus
    guard = gpus.first
    current = guard.current
    history = guard.events.history(kinds={"gpu"})
    snapshots = [other.snapshot() for other in gpus]
    return {
        "current": None if current is None else current.to_dict(),
        "snapshot": snapshots[0].to_dict(),
        "recent": [event.to_dict() for event in history[len(history) - recent :]],
        "gpus": gpu_dicts(snapshots),
    }


def gpu_dicts(snapshots: Sequence[GuardSnapshot]) -> list[dict[str, Any]]:
    """Each GPU's snapshot as a dict, named by its lease (``gpu``)."""
    return [{"gpu": snapshot.guard, **snapshot.to_dict()} for snapshot in snapshots]


@router.get("/status")
async def status(context: Context) -> dict[str, Any]:
    """Backend health, the current and loaded models, embedders and the GPU snapshot."""
    report = await context.gateway.status()
    return {
        "backend": asdict(report.backend),
        "model": report.model,
        "loaded": [asdict(m) for m in report.loaded],
        "gpu": report.gpu.to_dict(),
        "gpus": gpu_dicts(report.gpus),
        "gpu_embedder": report.gpu_embedder,
        "cpu_embedder": report.cpu_embedder,
        "prewarming": report.prewarming,
        "errors": report.errors,
        "jobs_enabled": context.jobs is not None,
        "retrieval_enabled": context.retriever is not None,
    }


@router.post("/models/load", responses=MODEL_ERRORS)
async def load(body: ModelRequest, context: Context) -> dict[str, Any]:
    """Load a model under the GPU lease; returns once it can serve."""
    await context.gateway.load(body.model)
    return {"model": body.model, "status": "loaded"}


@router.post("/models/unload", responses=MODEL_ERRORS)
async def unload(body: ModelRequest, context: Context) -> dict[str, Any]:
    """Unload a model under the GPU lease; returns once its memory is freed."""
    await context.gateway.unload(body.model)
    return {"model": body.model, "status": "unloaded"}


@router.post("/models/prewarm", responses=MODEL_ERRORS)
async def prewarm(body: PrewarmRequest, context: Context) -> dict[str, Any]:
    """Prewarm a model under the GPU lease; with ``make_current``, switch to it once it is ready.

    A model that fails to prewarm (unknown, failed to load) never becomes the current one.
    """
    gateway = context.gateway
    await gateway.prewarm(body.model)
    if body.make_current and body.model:
        gateway.model = body.model
    return {"model": body.model or gateway.model, "status": "ready"}


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@router.get("/logs")
async def logs(
    request: Request,
    level: LogLevel = "DEBUG",
    logger: Annotated[str, Query(max_length=200)] = "",
    contains: Annotated[str, Query(max_length=200)] = "",
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """The server's recent log lines (secrets masked), oldest first.

    Filtered by minimum ``level``, ``logger`` prefix and ``contains`` text; ``after`` (a
    line's ``seq``) returns only newer lines, so that a viewer can poll for what is new.
    """
    ring: LogRing = request.app.state.logs
    lines = ring.lines(
        level=logging.getLevelName(level),
        logger=logger,
        contains=contains,
        after=after,
        limit=limit,
    )
    return {"lines": [line.to_dict() for line in lines]}
