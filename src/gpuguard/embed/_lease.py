"""What the embedding layer needs from a GPU guard (any scope: process, host or Redis)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .._clock import Clock
from .._events import EventBus, Priority
from ..guard import HolderInfo, Lease, Timeout

__all__ = ["LeaseGuard"]


class LeaseGuard(Protocol):
    """The slice of :class:`~gpuguard.GpuGuard` that GPU embedding goes through."""

    name: str
    events: EventBus
    clock: Clock

    @property
    def current(self) -> HolderInfo | None:
        """The operation holding the GPU, or None."""

    def hold(
        self,
        operation: str,
        *,
        model: str | None = ...,
        priority: Priority = ...,
        hold_timeout: Timeout = ...,
    ) -> AbstractAsyncContextManager[Lease]:
        """Hold the GPU for the body of ``async with``, waiting in the queue if needed."""

    def try_hold(
        self,
        operation: str,
        *,
        model: str | None = ...,
        priority: Priority = ...,
        hold_timeout: Timeout = ...,
    ) -> AbstractAsyncContextManager[Lease]:
        """Hold the GPU only if it is free and nobody is queued, else raise ``WouldBlock``."""
