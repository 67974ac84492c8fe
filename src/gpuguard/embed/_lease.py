"""What the embedding layer needs from a GPU guard (any scope: process, host or Redis)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .._events import Priority

__all__ = ["LeaseGuard"]


class LeaseGuard(Protocol):
    """The slice of :class:`~gpuguard.GpuGuard` that GPU embedding goes through."""

    def hold(
        self, operation: str, *, model: str | None = ..., priority: Priority = ...
    ) -> AbstractAsyncContextManager[object]:
        """Hold the GPU for the body of ``async with``, waiting in the queue if needed."""

    def try_hold(
        self, operation: str, *, model: str | None = ..., priority: Priority = ...
    ) -> AbstractAsyncContextManager[object]:
        """Hold the GPU only if it is free and nobody is queued, else raise ``WouldBlock``."""

    def report_fallback(
        self, operation: str, *, model: str | None = ..., detail: str = ...
    ) -> None:
        """Record that ``operation`` ran on the CPU because the GPU was busy."""
