"""Long jobs with progress: schema refresh, RAG document indexing, and the job manager.

:func:`refresh_database_schemas` and :func:`process_rag_documents` publish
:class:`~gpuguard.JobEvent` s and return an :class:`IndexResult`; :class:`JobManager` runs
them (or any coroutine) in the background under an id that the server and CLI can list,
inspect and cancel.
"""

from ._manager import JobInfo, JobManager, JobStatus
from ._progress import IndexResult, JobIssue, new_job_id
from .rag import process_rag_documents
from .schema_refresh import refresh_database_schemas

__all__ = [
    "IndexResult",
    "JobInfo",
    "JobIssue",
    "JobManager",
    "JobStatus",
    "new_job_id",
    "process_rag_documents",
    "refresh_database_schemas",
]
