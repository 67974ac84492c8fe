"""The job routes' view of the job manager: indexing jobs with their sources checked first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from .._events import EventBus
from .._exceptions import SourceUnavailable
from ..embed import BulkEmbedder
from ..index import VectorStore, database_label
from ..jobs import JobInfo, JobManager, process_rag_documents, refresh_database_schemas

__all__ = ["IndexingJobs", "check_database_url"]


class IndexingJobs:
    """Starts schema refreshes and RAG indexings on a :class:`JobManager`.

    A source that cannot work (a malformed URL, an unknown driver, a missing SQLite file or
    document path) is refused with :class:`SourceUnavailable` before any job starts.
    """

    def __init__(
        self,
        manager: JobManager,
        *,
        store: VectorStore,
        bulk: BulkEmbedder,
        events: EventBus,
        rewarm: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.manager = manager
        self.store = store
        self.bulk = bulk
        self.events = events
        self.rewarm = rewarm

    async def start_schema_refresh(self, database_url: str) -> JobInfo:
        """Start refreshing the schemas of the database at ``database_url``."""
        await asyncio.to_thread(check_database_url, database_url)
        return self.manager.start(
            "schema-refresh",
            lambda job_id: refresh_database_schemas(
                database_url, store=self.store, bulk=self.bulk, events=self.events, job_id=job_id
            ),
        )

    async def start_rag(self, path: Path) -> JobInfo:
        """Start indexing the documents under ``path`` (then re-warm the LLM)."""
        if not await asyncio.to_thread(path.exists):
            raise SourceUnavailable(f"no such file or folder: {str(path)!r}")
        return self.manager.start(
            "rag-indexing",
            lambda job_id: process_rag_documents(
                [path],
                store=self.store,
                bulk=self.bulk,
                events=self.events,
                rewarm=self.rewarm,
                job_id=job_id,
            ),
        )

    def list(self) -> list[JobInfo]:
        """Every remembered job, newest first."""
        return list(reversed(self.manager.list()))

    def get(self, job_id: str) -> JobInfo:
        """One job (:class:`~gpuguard.JobNotFound` when unknown)."""
        return self.manager.get(job_id)

    async def cancel(self, job_id: str) -> JobInfo:
        """Cancel one job and wait for it to stop."""
        return await self.manager.cancel(job_id)


def check_database_url(url: str) -> None:
    """Raise :class:`SourceUnavailable` for a URL that cannot name a reachable database."""
    from sqlalchemy.engine import make_url

    database_label(url)  # raises SourceUnavailable for a malformed URL
    parsed = make_url(url)
    try:
        parsed.get_dialect()
    except Exception as exc:
        raise SourceUnavailable(
            f"unsupported database URL scheme {parsed.drivername!r}: {exc}"
        ) from exc
    database = parsed.database
    is_file = database not in (None, "", ":memory:")
    if parsed.get_backend_name() == "sqlite" and is_file and not Path(str(database)).is_file():
        raise SourceUnavailable(f"no SQLite database file at {database!r}")
