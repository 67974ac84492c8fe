"""Errors of indexing, jobs, settings and requests the server cannot honour."""

from __future__ import annotations

from typing import ClassVar

from ._base import ErrorCategory, GpuGuardError

__all__ = [
    "ConfigError",
    "ContextLengthExceeded",
    "DocumentError",
    "IndexingError",
    "InvalidRequest",
    "JobError",
    "JobNotFound",
    "JobQueueFull",
    "SourceUnavailable",
    "StoreError",
    "UnsupportedParameter",
]


class IndexingError(GpuGuardError):
    """Schema refresh, document indexing or the vector store failed."""

    category: ClassVar[ErrorCategory] = "internal"
    code: ClassVar[str] = "indexing_error"


class SourceUnavailable(IndexingError):
    """A database URL or document path is malformed, refused, missing or unreachable.

    ``source`` names the source without secrets; ``detail`` is for the operator's log only
    (the driver's own words about a failed connection), never shown to callers.
    """

    category: ClassVar[ErrorCategory] = "invalid"
    code: ClassVar[str] = "source_unavailable"

    def __init__(
        self, message: str, *, source: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.source = source
        self.detail = detail


class DocumentError(IndexingError):
    """One document could not be indexed (unreadable, empty, binary or corrupt)."""

    category: ClassVar[ErrorCategory] = "unprocessable"
    code: ClassVar[str] = "document_error"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class StoreError(IndexingError):
    """The on-disk vector store cannot be opened or written."""

    category: ClassVar[ErrorCategory] = "internal"
    code: ClassVar[str] = "store_error"


class JobError(GpuGuardError):
    """A long-running job could not be started or controlled."""

    category: ClassVar[ErrorCategory] = "conflict"
    code: ClassVar[str] = "job_error"


class JobNotFound(JobError):
    """No job has the requested id."""

    category: ClassVar[ErrorCategory] = "not_found"
    code: ClassVar[str] = "job_not_found"


class JobQueueFull(JobError):
    """Too many jobs are waiting (in all, or of one caller); retry after ``retry_after_s``."""

    category: ClassVar[ErrorCategory] = "busy"
    code: ClassVar[str] = "job_queue_full"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConfigError(GpuGuardError):
    """The settings are impossible or contradict each other."""

    category: ClassVar[ErrorCategory] = "invalid"
    code: ClassVar[str] = "config_error"


class InvalidRequest(GpuGuardError):
    """A request asks for something this server cannot honour (yet); ``param`` names the field.

    Refusing is the rule: a parameter is never silently dropped.
    """

    category: ClassVar[ErrorCategory] = "invalid"
    code: ClassVar[str] = "unsupported_parameter"

    def __init__(
        self,
        param: str,
        why: str = "is not supported by this server yet",
        *,
        backend: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(f"{param} {why}")
        self.param = param
        self.backend = backend
        self.model = model


class UnsupportedParameter(InvalidRequest):
    """A generation parameter the backend cannot forward (never dropped silently)."""


class ContextLengthExceeded(InvalidRequest):
    """The prompt, plus the tokens asked for, does not fit the model's context."""

    category: ClassVar[ErrorCategory] = "invalid"
    code: ClassVar[str] = "context_length_exceeded"
