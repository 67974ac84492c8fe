"""``async with`` holds: :meth:`GpuGuard.hold` and :meth:`GpuGuard.try_hold`.

A :class:`Hold` asks the guard's :class:`~gpuguard.guard._keeper.Leases` for the GPU (at
once with :meth:`Hold.reserve`, or on entry), waits for the grant, and ends the lease from how
the body exits. A hung or lost lease's body ends in :class:`~gpuguard.OperationHung` or
:class:`~gpuguard.LeaseLost`, with the guard's own interruption withdrawn from the task.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from .._events import Priority
from .._exceptions import LeaseLost, OperationHung
from ._keeper import Leases
from ._lease import Lease, LeaseState
from ._options import Timeout

__all__ = ["Hold"]


class Hold:
    """The async context manager behind :meth:`GpuGuard.hold` and :meth:`GpuGuard.try_hold`.

    ``await hold.reserve()`` before ``async with hold`` takes the GPU or a place in the queue
    at once (raising :class:`QueueFull` or :class:`WouldBlock` then, before anything else
    happens) and says whether the GPU was busy; ``async with`` then waits for the grant.
    """

    def __init__(
        self,
        leases: Leases,
        operation: str,
        *,
        model: str | None,
        priority: Priority,
        wait_timeout: Timeout,
        hold_timeout: Timeout,
        nowait: bool,
        memory_bytes: int | None = None,
    ) -> None:
        self._leases = leases
        self._operation = operation
        self._model = model
        self._priority = priority
        self._wait_timeout = wait_timeout
        self._hold_timeout = hold_timeout
        self._nowait = nowait
        self._memory_bytes = memory_bytes
        self._lease: Lease | None = None
        self._pending: asyncio.Future[None] | None = None
        self._entered = False
        self._given_up = False

    async def reserve(self) -> bool:
        """Take the GPU, or a place in its queue, now; True if the GPU was busy (queued)."""
        if self._lease is not None:
            raise RuntimeError("this hold has already asked for the GPU")
        lease = self._new_lease()
        if not self._leases.grant_now(lease):
            await self._ask(lease)
        self._lease = lease
        return self._pending is not None

    def _new_lease(self) -> Lease:
        return self._leases.new_lease(
            self._operation, self._model, self._priority, self._hold_timeout, self._memory_bytes
        )

    async def _ask(self, lease: Lease) -> None:
        """Past :meth:`Leases.grant_now`: ask a shared scope, or queue (or ``WouldBlock``)."""
        if self._nowait:
            await self._leases.submit_nowait(lease)
        else:
            self._pending = await self._leases.submit(lease, self._wait_timeout)

    async def __aenter__(self) -> Lease:
        if self._entered or self._given_up:
            raise RuntimeError("a hold() context manager cannot be entered twice or once given up")
        self._entered = True
        lease = self._lease
        if lease is None:  # asked for here, by the task that runs it
            lease = self._new_lease()
            if not self._leases.grant_now(lease):
                await self._ask(lease)
            self._lease = lease
        else:
            lease.owner_task = asyncio.current_task()  # whoever reserved, this task runs it
        if self._pending is not None:
            await self._leases.await_grant(lease, self._pending)
        return lease

    async def aclose(self) -> None:
        """Give up a reservation never entered: leave the queue, or hand its grant on.

        A no-op once ``async with`` was entered (its exit ends the lease). Use it where a
        reservation may be abandoned, e.g. a stream closed while it said "Waiting for GPU"::

            async with contextlib.aclosing(hold):
                if await hold.reserve():
                    yield notice
                async with hold as lease:
                    ...
        """
        if self._lease is not None and not self._entered and not self._given_up:
            self._given_up = True
            self._leases.give_up(self._lease)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self._lease
        assert lease is not None
        try:
            if lease.streams and lease.held:
                await lease.close_streams()  # left open (a ``break``): it may still produce
        finally:
            if lease.state in (LeaseState.HUNG, LeaseState.LOST):
                await self._exit_hung(lease, exc_type, exc)
            else:
                self._leases.end(lease, exc_type, exc)

    async def _exit_hung(
        self, lease: Lease, exc_type: type[BaseException] | None, exc: BaseException | None
    ) -> None:
        lease.close_idle_streams()  # its body left a stream open: that stream is work too
        if not lease.in_flight:
            self._leases.hung.end_quarantine(lease, "its body has ended")
        task = asyncio.current_task()
        if task is None or task not in lease.interrupted:
            if isinstance(exc, OperationHung | LeaseLost | asyncio.CancelledError):
                return  # already the right error (or the caller's own cancellation)
            raise lease.interrupt_error() from exc
        absorbed: asyncio.CancelledError | None = None
        if exc_type is None:
            # The body ended before the guard's cancellation reached it: take delivery here,
            # or the CancelledError would surface at the caller's next await.
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError as err:
                absorbed = err
        if lease.withdraw_interrupt(task):
            # Also cancelled from outside: let that cancellation win.
            if absorbed is not None:
                raise absorbed
            if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                return
        raise lease.interrupt_error() from exc
