"""Queued requests: joining the line, waiting for the grant, giving up, leaving cancelled.

The arbiter keeps the line itself (:mod:`gpuguard.guard._arbiter`); :class:`WaitingLeases` owns what
happens to one guard's leases while they wait in it: the ``waiting`` event with the place in
line, the wait timer and its :class:`WaitTimeout`, a waiter cancelled before it resumed from
its grant (nothing is left behind), and a request turned away by a full line
(:class:`QueueFull`, with a retry-after estimate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import NoReturn

from .._clock import Clock
from .._events import GpuStatus
from .._exceptions import GuardError, QueueFull, WaitTimeout
from ._arbiter import Arbiter
from ._hung import INTERRUPTED, HungLeases
from ._lease import Lease, LeaseState
from ._telemetry import GuardTelemetry

__all__ = ["WaitingLeases"]


class WaitingLeases:
    """Tracks one guard's queued leases until they are granted or leave the line.

    ``forget`` drops a lease from the guard's registry and cancels its timer, ``finish``
    ends a held lease with an outcome, and ``holder`` names the current holder for events
    and errors.
    """

    def __init__(
        self,
        clock: Clock,
        arbiter: Arbiter,
        telemetry: GuardTelemetry,
        hung: HungLeases,
        *,
        forget: Callable[[Lease], None],
        finish: Callable[[Lease, GpuStatus, str], None],
        holder: Callable[[], str | None],
    ) -> None:
        self._clock = clock
        self._arbiter = arbiter
        self._telemetry = telemetry
        self._hung = hung
        self._forget = forget
        self._finish = finish
        self._holder = holder

    def joined(
        self,
        lease: Lease,
        pending: asyncio.Future[None],
        wait_s: float | None,
        position: int,
        holder: str | None,
    ) -> None:
        """``lease`` waits in line for ``pending``: announce it and arm its wait timer.

        ``position`` and ``holder`` are as the arbiter's decision to queue it saw them.
        """
        self._telemetry.waiting(lease.ticket, position=position, holder=holder)
        if wait_s is not None:
            lease.timer = self._clock.call_later(wait_s, partial(self._timed_out, lease, pending))

    async def await_grant(self, lease: Lease, pending: asyncio.Future[None]) -> None:
        """Wait for a queued lease's grant; cancellation leaves nothing behind."""
        try:
            await pending
        except asyncio.CancelledError:
            if pending.done() and not pending.cancelled():
                pending.exception()  # a timeout raced the cancellation: mark it seen
            if lease.state is LeaseState.HELD:
                self._finish(lease, GpuStatus.CANCELLED, "cancelled before it could start")
            elif lease.state is LeaseState.WAITING:
                self.abandon(lease)
            elif lease.state in INTERRUPTED:
                self._hung.cancelled_before_start(lease)
            raise
        except GuardError:  # the arbiter could not keep it in line: it left the line already
            lease.state = LeaseState.ABANDONED
            self._forget(lease)
            raise

    def reject(self, lease: Lease) -> NoReturn:
        """The line is full: turn ``lease`` away with :class:`QueueFull`."""
        lease.state = LeaseState.ABANDONED
        holder = self._holder()
        queued = self._arbiter.queue_length()
        self._telemetry.rejected(lease.ticket, holder=holder)
        raise QueueFull(
            operation=lease.operation,
            model=lease.model,
            holder=holder,
            queue_length=queued,
            retry_after_s=self._telemetry.retry_after(queued),
        )

    def abandon(self, lease: Lease) -> None:
        """A queued waiter gave up: take it out of the queue (or end a grant it just got)."""
        if not self._arbiter.withdraw(lease.ticket) and lease.state is LeaseState.HELD:
            # A shared scope learned only now that it was granted (on_grant ran first).
            self._finish(lease, GpuStatus.CANCELLED, "given up before it could start")
            return
        lease.state = LeaseState.ABANDONED
        self._forget(lease)
        waited = self._clock.monotonic() - lease.requested_at
        self._telemetry.abandoned(lease.ticket, waited_s=waited)

    def _timed_out(self, lease: Lease, pending: asyncio.Future[None]) -> None:
        if lease.state is not LeaseState.WAITING or pending.done():
            return
        if not self._arbiter.withdraw(lease.ticket):
            return
        lease.state = LeaseState.ABANDONED
        self._forget(lease)
        waited = self._clock.monotonic() - lease.requested_at
        holder = self._holder()
        self._telemetry.timed_out(lease.ticket, waited_s=waited, holder=holder)
        pending.set_exception(
            WaitTimeout(
                operation=lease.operation, model=lease.model, holder=holder, waited_s=waited
            )
        )
