"""What the routes work with: the gateway, optional retrieval, optional jobs, the token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request

from ..gateway import ModelGateway
from ._catalog import ModelCatalog

__all__ = ["JobRunner", "JobView", "Retriever", "ServerContext", "get_context"]

Retriever = Callable[[str], Awaitable[list[str]]]
"""Given a question, the most relevant passages from the index (best first)."""


class JobView(Protocol):
    """A job as the job routes show it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: id, kind, status, done, total, detail."""


class JobRunner(Protocol):
    """What the job routes need from the job manager.

    The ``start_*`` methods validate their source first and raise
    :class:`~gpuguard.SourceUnavailable` for a bad, refused or missing source, and
    :class:`~gpuguard.JobQueueFull` when the job would wait in a full queue (``caller`` is
    who asked); :meth:`get` and :meth:`cancel` raise :class:`~gpuguard.JobNotFound` for an
    unknown id.
    """

    async def start_schema_refresh(
        self, database_url: str, *, schemas: Sequence[str] | None = None, caller: str = ""
    ) -> JobView:
        """Start refreshing the schemas of one database (default: every non-system one)."""

    async def start_rag(self, path: Path, *, caller: str = "") -> JobView:
        """Start indexing the documents under ``path``."""

    def list(self) -> Sequence[JobView]:
        """Every job, newest first."""

    def get(self, job_id: str) -> JobView:
        """One job."""

    async def cancel(self, job_id: str) -> JobView:
        """Cancel one job and return its state."""


@dataclass(slots=True)
class ServerContext:
    """The objects behind one app; stored on ``app.state.context``.

    ``retriever`` serves ``"retrieval": true`` chat requests; ``jobs`` serves the job routes.
    Either may be ``None``, and the routes that need it answer with a clear error.
    ``models`` maps configured model names and aliases to the backend's ids.
    """

    gateway: ModelGateway
    retriever: Retriever | None = None
    jobs: JobRunner | None = None
    models: ModelCatalog = field(default_factory=ModelCatalog)


def get_context(request: Request) -> ServerContext:
    """FastAPI dependency: the app's :class:`ServerContext`."""
    context: ServerContext = request.app.state.context
    return context
