"""gpuguard: one fair, prioritised, bounded lease for every GPU operation.

Local AI apps run an LLM and embedding models on one GPU; gpuguard makes every GPU operation
(LLM load, unload, prewarm, chat; embedding-model load and inference) go through one
:class:`GpuGuard`, reports what is happening as :class:`GpuEvent` s, lets bulk embedding fall
back to the CPU instead of waiting, and never lets an operation hang or starve.
"""

from . import _logging
from ._clock import Clock, FakeClock, SystemClock, TimerHandle
from ._events import (
    Event,
    EventBus,
    GpuEvent,
    GpuStatus,
    JobEvent,
    ModelEvent,
    Priority,
    Subscription,
)
from ._exceptions import (
    BackendBusy,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    DimensionMismatch,
    DocumentError,
    EmbedderUnavailable,
    EmbeddingError,
    GpuGuardError,
    GuardError,
    GuardUnavailable,
    IndexingError,
    InvalidRequest,
    JobError,
    JobNotFound,
    LeaseLost,
    LeaseNotHeld,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
    NotSupportedByBackend,
    OperationHung,
    QueueFull,
    SourceUnavailable,
    StoreError,
    UnsupportedParameter,
    WaitTimeout,
    WorkerCrashed,
    WorkerError,
    WorkerKilled,
    WouldBlock,
)
from ._guard import GpuGuard
from ._lease import Lease
from ._options import DEFAULT, DefaultType, OnHang, Timeout
from ._snapshot import GuardCounters, GuardSnapshot, HolderInfo, WaiterInfo
from ._work import StopWork, in_thread, run_to_end

__version__ = "0.1.0"

_logging.install()

__all__ = [
    "DEFAULT",
    "BackendBusy",
    "BackendError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "Clock",
    "ConfigError",
    "ContextLengthExceeded",
    "DefaultType",
    "DimensionMismatch",
    "DocumentError",
    "EmbedderUnavailable",
    "EmbeddingError",
    "Event",
    "EventBus",
    "FakeClock",
    "GpuEvent",
    "GpuGuard",
    "GpuGuardError",
    "GpuStatus",
    "GuardCounters",
    "GuardError",
    "GuardSnapshot",
    "GuardUnavailable",
    "HolderInfo",
    "IndexingError",
    "InvalidRequest",
    "JobError",
    "JobEvent",
    "JobNotFound",
    "Lease",
    "LeaseLost",
    "LeaseNotHeld",
    "ModelEvent",
    "ModelLoadFailed",
    "ModelNotFound",
    "ModelNotLoaded",
    "NotSupportedByBackend",
    "OnHang",
    "OperationHung",
    "Priority",
    "QueueFull",
    "SourceUnavailable",
    "StopWork",
    "StoreError",
    "Subscription",
    "SystemClock",
    "Timeout",
    "TimerHandle",
    "UnsupportedParameter",
    "WaitTimeout",
    "WaiterInfo",
    "WorkerCrashed",
    "WorkerError",
    "WorkerKilled",
    "WouldBlock",
    "__version__",
    "in_thread",
    "run_to_end",
]
