"""Every error gpuguard raises, in one tree.

::

    GpuGuardError
    ├── GuardError                    the GPU lease
    │   ├── WaitTimeout               waited longer than wait_timeout; names the holder
    │   ├── QueueFull                 the bounded queue is full; carries retry_after_s
    │   ├── WouldBlock                acquire_nowait/try_hold while the GPU is held or queued
    │   ├── OperationHung             held longer than hold_timeout; its work was stopped
    │   ├── LeaseNotHeld              released a lease that was never granted or already freed
    │   ├── LeaseLost                 held, then lost (Redis heartbeat failed, key expired)
    │   └── GuardUnavailable          the shared lease (Redis) cannot be reached
    ├── BackendError                  an LLM server or in-process LLM runtime
    │   ├── BackendUnavailable        unreachable, refused, or not started
    │   ├── BackendTimeout            the server did not answer in time
    │   ├── BackendBusy               the server said it is busy (Ollama 503); retry later
    │   ├── ModelNotFound             the server does not know the model
    │   ├── ModelNotLoaded            the model is known but not loaded (no auto-load)
    │   ├── ModelLoadFailed           the server failed to load (or unload) the model
    │   ├── BackendProtocolError      the server answered something the API does not allow
    │   └── NotSupportedByBackend     the configured backend cannot do this at all
    ├── EmbeddingError                an embedding engine
    │   ├── EmbedderUnavailable       the engine or its model cannot be loaded
    │   └── DimensionMismatch         GPU and CPU embedders disagree on the dimension
    ├── IndexingError                 schema refresh, documents, the vector store
    │   ├── SourceUnavailable         bad database URL, unreachable database, missing path
    │   ├── DocumentError             one unreadable, empty, binary or corrupt document
    │   └── StoreError                the on-disk vector store is unusable
    ├── WorkerError                   a worker process running in-process GPU work
    │   ├── WorkerCrashed             it died on its own mid-call (signal, exit, OOM kill)
    │   └── WorkerKilled              it was killed on purpose (abort, timeout) mid-call
    ├── JobError                      a long-running job
    │   └── JobNotFound               no job with that id
    ├── ConfigError                   impossible or contradictory settings
    └── InvalidRequest                a request field this server cannot honour; names it
        ├── UnsupportedParameter      a generation parameter this backend does not support
        └── ContextLengthExceeded     the prompt (plus max_tokens) exceeds the model's context

Engines that run in a worker process (embedded llama.cpp, the GPU embedder) map a
:class:`WorkerError` to their own layer's error (``BackendError``, ``EmbeddingError``) with the
worker error as its ``__cause__``.

Every error carries its context as attributes (operation, model, holder, server) so that
the HTTP layer can map the tree to status codes in one place.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "BackendBusy",
    "BackendError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "ContextLengthExceeded",
    "DimensionMismatch",
    "DocumentError",
    "EmbedderUnavailable",
    "EmbeddingError",
    "GpuGuardError",
    "GuardError",
    "GuardUnavailable",
    "IndexingError",
    "InvalidRequest",
    "JobError",
    "JobNotFound",
    "LeaseLost",
    "LeaseNotHeld",
    "ModelLoadFailed",
    "ModelNotFound",
    "ModelNotLoaded",
    "NotSupportedByBackend",
    "OperationHung",
    "QueueFull",
    "SourceUnavailable",
    "StoreError",
    "UnsupportedParameter",
    "WaitTimeout",
    "WorkerCrashed",
    "WorkerError",
    "WorkerKilled",
    "WouldBlock",
]


ErrorCategory = Literal[
    "busy",  # the GPU or a server is busy: retry later (HTTP 503)
    "timeout",  # something took longer than its limit (504)
    "not_found",  # no such model or job (404)
    "conflict",  # the request does not fit the current state (409)
    "invalid",  # the request itself is wrong (400)
    "unprocessable",  # a well-formed input that cannot be used, e.g. a corrupt document (422)
    "unsupported",  # the backend cannot do it (501)
    "upstream",  # an LLM server failed (502)
    "unavailable",  # a local engine cannot run (503)
    "internal",  # a fault of our own (500)
]
"""What an error means for the caller; the HTTP layer maps each category to a status."""


class GpuGuardError(Exception):
    """Base of every error raised by gpuguard."""

    category: ClassVar[ErrorCategory] = "internal"
    code: ClassVar[str] = "internal_error"


# --- the GPU lease -------------------------------------------------------------------------


class GuardError(GpuGuardError):
    """A GPU lease could not be granted, or was lost.

    ``operation`` and ``model`` name the operation that asked; ``holder`` names the
    operation holding the GPU at the time (``None`` when the GPU was free).
    """

    category: ClassVar[ErrorCategory] = "internal"
    code: ClassVar[str] = "gpu_guard_error"

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        model: str | None = None,
        holder: str | None = None,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.model = model
        self.holder = holder


class WaitTimeout(GuardError):
    """Waited longer than the wait timeout for the GPU."""

    category: ClassVar[ErrorCategory] = "busy"
    code: ClassVar[str] = "gpu_wait_timeout"

    def __init__(
        self,
        *,
        operation: str,
        model: str | None,
        holder: str | None,
        waited_s: float,
    ) -> None:
        held_by = f"held by {holder}" if holder else "queued behind other operations"
        super().__init__(
            f"{operation!r} gave up after waiting {waited_s:.3f}s for the GPU ({held_by})",
            operation=operation,
            model=model,
            holder=holder,
        )
        self.waited_s = waited_s


class QueueFull(GuardError):
    """The GPU queue is full; try again after ``retry_after_s`` seconds."""

    category: ClassVar[ErrorCategory] = "busy"
    code: ClassVar[str] = "gpu_queue_full"

    def __init__(
        self,
        *,
        operation: str,
        model: str | None,
        holder: str | None,
        queue_length: int,
        retry_after_s: float,
    ) -> None:
        super().__init__(
            f"GPU queue full ({queue_length} waiting); {operation!r} rejected, "
            f"retry after {retry_after_s:.0f}s",
            operation=operation,
            model=model,
            holder=holder,
        )
        self.queue_length = queue_length
        self.retry_after_s = retry_after_s


class WouldBlock(GuardError):
    """A non-blocking acquire found the GPU held or other operations queued."""

    category: ClassVar[ErrorCategory] = "busy"
    code: ClassVar[str] = "gpu_busy"

    def __init__(
        self, *, operation: str, model: str | None, holder: str | None, queued: int
    ) -> None:
        reason = f"held by {holder}" if holder else f"{queued} operation(s) queued"
        super().__init__(
            f"GPU busy for {operation!r} ({reason})",
            operation=operation,
            model=model,
            holder=holder,
        )
        self.queued = queued


class OperationHung(GuardError):
    """The operation held the GPU past its hold timeout; it was treated as hung and stopped."""

    category: ClassVar[ErrorCategory] = "timeout"
    code: ClassVar[str] = "gpu_operation_hung"

    def __init__(self, *, operation: str, model: str | None, held_s: float) -> None:
        super().__init__(
            f"{operation!r} held the GPU for {held_s:.3f}s, past its hold timeout; "
            "it was treated as hung and its GPU work stopped",
            operation=operation,
            model=model,
            holder=operation,
        )
        self.held_s = held_s


class LeaseNotHeld(GuardError):
    """Released a lease that was never granted, or that the guard already took back."""

    category: ClassVar[ErrorCategory] = "internal"
    code: ClassVar[str] = "lease_not_held"


class LeaseLost(GuardError):
    """The lease was held, then lost: its work was stopped and the GPU may have a new holder.

    Raised by a Redis-scope lease whose heartbeat failed, whose key expired or was taken
    over, or whose Redis restarted. ``reason`` says which; ``fence`` is the fencing token the
    lost grant carried.
    """

    category: ClassVar[ErrorCategory] = "busy"
    code: ClassVar[str] = "gpu_lease_lost"

    def __init__(
        self, *, operation: str, model: str | None, reason: str, fence: int | None
    ) -> None:
        super().__init__(
            f"{operation!r} lost its GPU lease ({reason}); its GPU work was stopped",
            operation=operation,
            model=model,
        )
        self.reason = reason
        self.fence = fence


class GuardUnavailable(GuardError):
    """The shared lease cannot be reached (Redis down or unreachable); nothing was granted."""

    category: ClassVar[ErrorCategory] = "busy"
    code: ClassVar[str] = "gpu_guard_unavailable"

    def __init__(self, *, operation: str, model: str | None, scope: str, reason: str) -> None:
        super().__init__(
            f"GPU lease ({scope} scope) unavailable for {operation!r}: {reason}",
            operation=operation,
            model=model,
        )
        self.scope = scope
        self.reason = reason


# --- LLM backends --------------------------------------------------------------------------


class BackendError(GpuGuardError):
    """An LLM backend failed. ``backend`` names the server kind, ``url`` where it lives."""

    category: ClassVar[ErrorCategory] = "upstream"
    code: ClassVar[str] = "backend_error"

    def __init__(
        self,
        message: str,
        *,
        backend: str,
        model: str | None = None,
        url: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.backend = backend
        self.model = model
        self.url = url
        self.status_code = status_code


class BackendUnavailable(BackendError):
    """The server cannot be reached (refused, DNS, not started, not installed)."""

    category: ClassVar[ErrorCategory] = "upstream"
    code: ClassVar[str] = "backend_unavailable"


class BackendTimeout(BackendError):
    """The server did not answer within the configured timeout."""

    category: ClassVar[ErrorCategory] = "timeout"
    code: ClassVar[str] = "backend_timeout"


class BackendBusy(BackendError):
    """The server reported itself busy; the request may be retried later."""

    category: ClassVar[ErrorCategory] = "busy"
    code: ClassVar[str] = "backend_busy"


class ModelNotFound(BackendError):
    """The server does not know the requested model."""

    category: ClassVar[ErrorCategory] = "not_found"
    code: ClassVar[str] = "model_not_found"


class ModelNotLoaded(BackendError):
    """The model exists but is not loaded, and the server will not load it on demand."""

    category: ClassVar[ErrorCategory] = "conflict"
    code: ClassVar[str] = "model_not_loaded"


class ModelLoadFailed(BackendError):
    """The server could not load or unload the model."""

    category: ClassVar[ErrorCategory] = "upstream"
    code: ClassVar[str] = "model_load_failed"


class BackendProtocolError(BackendError):
    """The server answered outside its documented API, or reported an internal error."""

    category: ClassVar[ErrorCategory] = "upstream"
    code: ClassVar[str] = "backend_protocol_error"


class NotSupportedByBackend(BackendError):
    """The configured backend has no such operation (e.g. pulling models into llama.cpp)."""

    category: ClassVar[ErrorCategory] = "unsupported"
    code: ClassVar[str] = "not_supported_by_backend"


# --- embeddings ----------------------------------------------------------------------------


class EmbeddingError(GpuGuardError):
    """An embedding engine failed."""

    category: ClassVar[ErrorCategory] = "internal"
    code: ClassVar[str] = "embedding_error"


class EmbedderUnavailable(EmbeddingError):
    """The embedding engine or its model cannot be loaded on the requested device."""

    category: ClassVar[ErrorCategory] = "unavailable"
    code: ClassVar[str] = "embedder_unavailable"


class DimensionMismatch(EmbeddingError):
    """Two embedders that must be interchangeable produce vectors of different sizes."""

    category: ClassVar[ErrorCategory] = "internal"
    code: ClassVar[str] = "dimension_mismatch"

    def __init__(self, *, gpu_dim: int, cpu_dim: int) -> None:
        super().__init__(
            f"GPU embedder gives {gpu_dim}-dimensional vectors but the CPU embedder gives "
            f"{cpu_dim}; configure the same model for both"
        )
        self.gpu_dim = gpu_dim
        self.cpu_dim = cpu_dim


# --- indexing ------------------------------------------------------------------------------


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


# --- worker processes ----------------------------------------------------------------------


class WorkerError(GpuGuardError):
    """A worker process could not finish a call.

    ``worker`` names the worker, ``operation`` the call it was running; ``exit_code`` is the
    process's exit status (negative: killed by that signal) and ``stderr`` the tail of what it
    wrote to its standard error, where known.
    """

    def __init__(
        self,
        message: str,
        *,
        worker: str,
        operation: str | None = None,
        exit_code: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.worker = worker
        self.operation = operation
        self.exit_code = exit_code
        self.stderr = stderr


class WorkerCrashed(WorkerError):
    """The worker process died on its own (a segfault, ``os._exit``, the OOM killer)."""


class WorkerKilled(WorkerError):
    """The worker process was killed on purpose (an abort or a timeout) while the call ran."""


# --- jobs and configuration ----------------------------------------------------------------


class JobError(GpuGuardError):
    """A long-running job could not be started or controlled."""

    category: ClassVar[ErrorCategory] = "conflict"
    code: ClassVar[str] = "job_error"


class JobNotFound(JobError):
    """No job has the requested id."""

    category: ClassVar[ErrorCategory] = "not_found"
    code: ClassVar[str] = "job_not_found"


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
