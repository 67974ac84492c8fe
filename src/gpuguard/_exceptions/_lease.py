"""Errors of the GPU lease: waits, queues, hangs, lost and unreachable leases."""

from __future__ import annotations

from typing import ClassVar

from ._base import ErrorCategory, GpuGuardError

__all__ = [
    "GuardError",
    "GuardUnavailable",
    "LeaseLost",
    "LeaseNotHeld",
    "OperationHung",
    "QueueFull",
    "StaleFence",
    "WaitTimeout",
    "WouldBlock",
]


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


class StaleFence(LeaseLost):
    """Work under a fencing token older than the newest seen for its GPU: it was refused.

    The lease was taken over (a newer grant's work reached the same GPU first), so the work
    never started. ``fence`` is the refused token, ``newest`` the one seen, ``gpu`` the GPU.
    """

    category: ClassVar[ErrorCategory] = "conflict"
    code: ClassVar[str] = "gpu_fence_stale"

    def __init__(
        self, *, operation: str, model: str | None, gpu: str, fence: int, newest: int
    ) -> None:
        reason = f"GPU {gpu!r} has seen fencing token {newest}, newer than {fence}"
        # Not LeaseLost's message: this work was refused before it started, not stopped.
        GuardError.__init__(
            self,
            f"{operation!r} refused: {reason}; the lease was taken over by a newer holder",
            operation=operation,
            model=model,
        )
        self.reason = reason
        self.fence = fence
        self.newest = newest
        self.gpu = gpu


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
