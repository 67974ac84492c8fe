"""The root of the tree and the categories the HTTP layer maps to status codes."""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = ["ErrorCategory", "GpuGuardError"]


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
