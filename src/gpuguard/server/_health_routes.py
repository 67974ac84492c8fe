"""Probes: ``GET /health`` (the process answers) and ``GET /ready`` (it can serve a chat).

Both are open without the bearer token, like the load balancers and supervisors that call
them expect, and say nothing beyond up/ready and the current model's name.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ._context import ServerContext, get_context

__all__ = ["router"]

router = APIRouter(tags=["health"])

Context = Annotated[ServerContext, Depends(get_context)]


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: 200 whenever the server answers at all, naming itself (``server``: gpuguard)."""
    return {"status": "ok", "server": "gpuguard"}


@router.get("/ready", responses={503: {"description": "Backend down or model not loaded"}})
async def ready(context: Context) -> JSONResponse:
    """Readiness: 200 when the backend answers and the current model is loaded, else 503."""
    gateway = context.gateway
    backend = await gateway.backend.health()
    loaded = False
    if backend.ok and gateway.model is not None:
        loaded = gateway.model in {m.id for m in await gateway.backend.loaded_models()}
    is_ready = backend.ok and loaded
    body: dict[str, Any] = {
        "status": "ready" if is_ready else "not_ready",
        "backend": "up" if backend.ok else "down",
        "model": gateway.model,
        "model_loaded": loaded,
    }
    return JSONResponse(body, status_code=200 if is_ready else 503)
