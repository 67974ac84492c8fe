"""Errors of embedding engines and of the worker processes that run GPU engines."""

from __future__ import annotations

from typing import ClassVar

from ._base import ErrorCategory, GpuGuardError

__all__ = [
    "DevicesUnavailable",
    "DimensionMismatch",
    "EmbedderUnavailable",
    "EmbeddingError",
    "WorkerCrashed",
    "WorkerError",
    "WorkerKilled",
]


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


class DevicesUnavailable(GpuGuardError):
    """The GPU facts cannot be read (no driver, no NVML library, a call that failed)."""

    category: ClassVar[ErrorCategory] = "unavailable"
    code: ClassVar[str] = "devices_unavailable"
