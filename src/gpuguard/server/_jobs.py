"""The job routes' view of the job manager: indexing jobs with their sources checked first."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from .._events import EventBus
from .._exceptions import SourceUnavailable
from .._redact import mask_url
from ..embed import BulkEmbedder
from ..index import DatabaseTimeouts, SourcePolicy, VectorStore, resolve_source
from ..jobs import JobInfo, JobManager, process_rag_documents, refresh_database_schemas
from ..settings import SourceSettings

__all__ = ["IndexingJobs"]


class IndexingJobs:
    """Starts schema refreshes and RAG indexings on a :class:`JobManager`, within ``sources``.

    ``sources`` (default: the settings' defaults) decides which documents and databases a
    caller may name (:class:`~gpuguard.index.SourcePolicy`) and bounds the work: database
    timeouts, text extracted per file and per job. A source that is refused or cannot work
    (a malformed URL, an unknown driver, a missing SQLite file or document path) raises
    :class:`~gpuguard.SourceUnavailable` before any job starts.
    """

    def __init__(
        self,
        manager: JobManager,
        *,
        store: VectorStore,
        bulk: BulkEmbedder,
        events: EventBus,
        rewarm: Callable[[], Awaitable[None]] | None = None,
        sources: SourceSettings | None = None,
    ) -> None:
        self.manager = manager
        self.store = store
        self.bulk = bulk
        self.events = events
        self.rewarm = rewarm
        self.sources = sources if sources is not None else SourceSettings()
        self.policy = SourcePolicy.from_settings(self.sources)
        self.timeouts = DatabaseTimeouts(
            connect_s=self.sources.connect_timeout_s,
            statement_s=self.sources.statement_timeout_s,
            total_s=self.sources.refresh_timeout_s,
        )

    async def start_schema_refresh(
        self, database_url: str, *, schemas: Sequence[str] | None = None, caller: str = ""
    ) -> JobInfo:
        """Start refreshing ``schemas`` (default: every non-system one) of one database."""
        await asyncio.to_thread(resolve_source, database_url, self.policy)
        wanted = list(schemas) if schemas else None
        return self.manager.start(
            "schema-refresh",
            lambda job_id: refresh_database_schemas(
                database_url,
                store=self.store,
                bulk=self.bulk,
                events=self.events,
                job_id=job_id,
                schemas=wanted,
                policy=self.policy,
                timeouts=self.timeouts,
            ),
            source=mask_url(database_url),
            caller=caller,
        )

    async def start_rag(self, path: Path, *, caller: str = "") -> JobInfo:
        """Start indexing the documents under ``path`` (then re-warm the LLM)."""
        await asyncio.to_thread(_check_document_path, self.policy, path)
        return self.manager.start(
            "rag-indexing",
            lambda job_id: process_rag_documents(
                [path],
                store=self.store,
                bulk=self.bulk,
                events=self.events,
                rewarm=self.rewarm,
                job_id=job_id,
                policy=self.policy,
                max_chars_per_file=self.sources.max_chars_per_file,
                max_chars_per_job=self.sources.max_chars_per_job,
                extract_timeout_s=self.sources.extract_timeout_s,
            ),
            source=str(path),
            caller=caller,
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


def _check_document_path(policy: SourcePolicy, path: Path) -> None:
    resolved = policy.check_path(path)
    if not os.path.lexists(resolved):  # never raises, whatever the name
        raise SourceUnavailable(f"no such file or folder: {str(path)!r}")
