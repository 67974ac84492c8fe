"""Errors of LLM servers and in-process LLM runtimes."""

from __future__ import annotations

from typing import ClassVar

from ._base import ErrorCategory, GpuGuardError

__all__ = [
    "BackendBusy",
    "BackendError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "ModelLoadFailed",
    "ModelNotFound",
    "ModelNotLoaded",
    "NotSupportedByBackend",
]


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
