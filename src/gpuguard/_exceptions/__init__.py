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
    │   │   └── StaleFence            work under a fence older than the newest seen (409)
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
    ├── DevicesUnavailable            GPU facts (NVML) cannot be read
    ├── WorkerError                   a worker process running in-process GPU work
    │   ├── WorkerCrashed             it died on its own mid-call (signal, exit, OOM kill)
    │   └── WorkerKilled              it was killed on purpose (abort, timeout) mid-call
    ├── JobError                      a long-running job
    │   ├── JobNotFound               no job with that id
    │   └── JobQueueFull              too many jobs waiting; carries retry_after_s
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

from ._backends import (
    BackendBusy,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
    NotSupportedByBackend,
)
from ._base import ErrorCategory, GpuGuardError
from ._engines import (
    DevicesUnavailable,
    DimensionMismatch,
    EmbedderUnavailable,
    EmbeddingError,
    WorkerCrashed,
    WorkerError,
    WorkerKilled,
)
from ._lease import (
    GuardError,
    GuardUnavailable,
    LeaseLost,
    LeaseNotHeld,
    OperationHung,
    QueueFull,
    StaleFence,
    WaitTimeout,
    WouldBlock,
)
from ._requests import (
    ConfigError,
    ContextLengthExceeded,
    DocumentError,
    IndexingError,
    InvalidRequest,
    JobError,
    JobNotFound,
    JobQueueFull,
    SourceUnavailable,
    StoreError,
    UnsupportedParameter,
)

__all__ = [
    "BackendBusy",
    "BackendError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "ContextLengthExceeded",
    "DevicesUnavailable",
    "DimensionMismatch",
    "DocumentError",
    "EmbedderUnavailable",
    "EmbeddingError",
    "ErrorCategory",
    "GpuGuardError",
    "GuardError",
    "GuardUnavailable",
    "IndexingError",
    "InvalidRequest",
    "JobError",
    "JobNotFound",
    "JobQueueFull",
    "LeaseLost",
    "LeaseNotHeld",
    "ModelLoadFailed",
    "ModelNotFound",
    "ModelNotLoaded",
    "NotSupportedByBackend",
    "OperationHung",
    "QueueFull",
    "SourceUnavailable",
    "StaleFence",
    "StoreError",
    "UnsupportedParameter",
    "WaitTimeout",
    "WorkerCrashed",
    "WorkerError",
    "WorkerKilled",
    "WouldBlock",
]
