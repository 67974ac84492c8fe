"""gpuguard: one fair, prioritised, bounded lease for every GPU operation.

Local AI apps run an LLM and embedding models on one GPU; gpuguard makes every GPU operation
(LLM load, unload, prewarm, chat; embedding-model load and inference) go through one
:class:`GpuGuard`, reports what is happening as :class:`GpuEvent` s, lets bulk embedding fall
back to the CPU instead of waiting, and never lets an operation hang or starve.
"""

import typing

from . import _lazy, _logging
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
    JobQueueFull,
    LeaseLost,
    LeaseNotHeld,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
    NotSupportedByBackend,
    OperationHung,
    QueueFull,
    SourceUnavailable,
    StaleFence,
    StoreError,
    UnsupportedParameter,
    WaitTimeout,
    WorkerCrashed,
    WorkerError,
    WorkerKilled,
    WouldBlock,
)

if typing.TYPE_CHECKING:
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
    from .guard import (
        DEFAULT,
        DefaultType,
        GpuGuard,
        GpuSet,
        GuardCounters,
        GuardSnapshot,
        HolderInfo,
        Lease,
        OnHang,
        StopWork,
        Timeout,
        WaiterInfo,
        in_thread,
        run_to_end,
    )

__version__ = "0.1.0"

_logging.install()

# The lease and the events import asyncio: loaded on first use, so that a command that needs
# neither (``gpuguard --version``) starts at once.
_LAZY = {
    "Clock": "._clock",
    "FakeClock": "._clock",
    "SystemClock": "._clock",
    "TimerHandle": "._clock",
    "Event": "._events",
    "EventBus": "._events",
    "GpuEvent": "._events",
    "GpuStatus": "._events",
    "JobEvent": "._events",
    "ModelEvent": "._events",
    "Priority": "._events",
    "Subscription": "._events",
    "DEFAULT": ".guard",
    "DefaultType": ".guard",
    "GpuGuard": ".guard",
    "GpuSet": ".guard",
    "GuardCounters": ".guard",
    "GuardSnapshot": ".guard",
    "HolderInfo": ".guard",
    "Lease": ".guard",
    "OnHang": ".guard",
    "StopWork": ".guard",
    "Timeout": ".guard",
    "WaiterInfo": ".guard",
    "in_thread": ".guard",
    "run_to_end": ".guard",
}

__getattr__ = _lazy.lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "GpuSet",
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
    "JobQueueFull",
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
    "StaleFence",
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
