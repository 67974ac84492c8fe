"""Job API: start a schema refresh or a RAG indexing, list jobs with progress, cancel one.

A start that would wait in a full queue is a 503 with Retry-After (per caller: the bearer
token a request carries, hashed; callers without one share one bound). The list is paged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from .._exceptions import ConfigError
from ._context import JobRunner, ServerContext, get_context
from ._errors import error_responses

__all__ = ["router"]

# Every job route answers 400 when the server has no job manager.
router = APIRouter(prefix="/admin/jobs", tags=["jobs"], responses=error_responses(400))


class SchemaRefreshRequest(BaseModel):
    """Index the schemas (tables, columns, keys) of the database at ``database_url``.

    ``database_url`` is a URL (``postgres://``, ``mysql://``, ``mariadb://``, ``sqlite:///``)
    on a host the server allows, or the name of a database source the operator configured.
    ``schemas`` narrows the refresh (default: every non-system schema).
    """

    model_config = ConfigDict(strict=True)

    database_url: str = Field(min_length=1, max_length=2048)
    schemas: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, max_length=256
    )


class RagRequest(BaseModel):
    """Index the documents under ``path`` (a file or a folder on the server's machine)."""

    model_config = ConfigDict(strict=True)

    path: str = Field(min_length=1, max_length=4096)


def _jobs(context: Annotated[ServerContext, Depends(get_context)]) -> JobRunner:
    if context.jobs is None:
        raise ConfigError("this server has no job manager (no index is configured)")
    return context.jobs


Jobs = Annotated[JobRunner, Depends(_jobs)]


def _caller(request: Request) -> str:
    """Who asks, as a key for the per-caller bound: a digest of the token, never the token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = request.query_params.get("token", "")
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""


Caller = Annotated[str, Depends(_caller)]


@router.post("/schema-refresh", status_code=202, responses=error_responses(409, 503))
async def start_schema_refresh(
    body: SchemaRefreshRequest, jobs: Jobs, caller: Caller
) -> dict[str, Any]:
    """Start refreshing a database's schemas; a bad or refused URL is a 400 before any job."""
    job = await jobs.start_schema_refresh(body.database_url, schemas=body.schemas, caller=caller)
    return job.to_dict()


@router.post("/rag", status_code=202, responses=error_responses(409, 503))
async def start_rag(body: RagRequest, jobs: Jobs, caller: Caller) -> dict[str, Any]:
    """Start indexing documents; a missing or refused path is a 400 before any job."""
    return (await jobs.start_rag(Path(body.path), caller=caller)).to_dict()


@router.get("")
async def list_jobs(
    jobs: Jobs,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Jobs, newest first, with their progress: ``limit`` of them from ``offset`` on."""
    every = jobs.list()
    page = every[offset : offset + limit]
    return {"jobs": [job.to_dict() for job in page], "total": len(every), "offset": offset}


@router.get("/{job_id}", responses=error_responses(404))
async def get_job(job_id: str, jobs: Jobs) -> dict[str, Any]:
    """One job's state and progress (404 when unknown)."""
    return jobs.get(job_id).to_dict()


@router.post("/{job_id}/cancel", responses=error_responses(404))
async def cancel_job(job_id: str, jobs: Jobs) -> dict[str, Any]:
    """Cancel a job (a finished job is left as it is)."""
    return (await jobs.cancel(job_id)).to_dict()
