"""Hung and lost leases: stop their work, keep the GPU quarantined until it ends, free it.

A lease held past its hold timeout is *hung*; one whose shared-scope grant was taken away is
*lost*. Either way the tasks running its tracked work (or, for an opaque body, the task that
entered it) are cancelled. A hung lease keeps the GPU, visibly ``hung``, until that work has
really ended (``on_hang="quarantine"``), or hands it on at once (``on_hang="release"``); a
lost lease has no GPU left to keep. Its holder then gets :meth:`Lease.interrupt_error`, and
the guard's own cancellation is withdrawn from the task it was sent to.

:class:`HungLeases` owns these transitions for one guard; the front arms the hold timers,
routes the arbiter's "lost" callback here, and calls in when an interrupted lease is released
or its holder cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, NoReturn

from .._clock import Clock
from .._events import GpuStatus
from ._arbiter import Arbiter
from ._lease import Lease, LeaseState
from ._telemetry import GuardTelemetry

__all__ = ["INTERRUPTED", "HungLeases"]

INTERRUPTED: Final = (LeaseState.HUNG, LeaseState.LOST)
"""States whose work the guard interrupted; the holder gets :meth:`Lease.interrupt_error`."""


class HungLeases:
    """Stops the work of one guard's hung and lost leases and ends their quarantine.

    ``forget`` drops a lease from the guard's registry and cancels its timer.
    """

    def __init__(
        self,
        clock: Clock,
        arbiter: Arbiter,
        telemetry: GuardTelemetry,
        forget: Callable[[Lease], None],
    ) -> None:
        self._clock = clock
        self._arbiter = arbiter
        self._telemetry = telemetry
        self._forget = forget

    def hold_timed_out(self, lease: Lease, *, release: bool) -> None:
        """The hold timeout passed: stop the lease's work; quarantine or hand the GPU on."""
        if lease.state is not LeaseState.HELD or lease.granted_at is None:
            return
        now = self._clock.monotonic()
        lease.state = LeaseState.HUNG
        lease.hung_at = now
        lease.quarantined = True
        lease.timer = None
        self._arbiter.mark_hung(lease.ticket, now)
        self._telemetry.hung(
            lease.ticket,
            waited_s=lease.waited_s,
            held_s=now - lease.granted_at,
            detail=(
                f"held past its hold timeout of {lease.hold_timeout}s; "
                + ("GPU handed on (on_hang=release)" if release else "stopping its work")
            ),
        )
        _interrupt(lease, "hung")
        if release:
            self.end_quarantine(lease, "")
        else:
            self._end_if_idle(lease)

    def _end_if_idle(self, lease: Lease) -> None:
        """An interrupted lease with nothing left running on the GPU ends at once."""
        if not lease.in_flight and lease.tracked:
            self.end_quarantine(lease, "no GPU work was running")
        elif not lease.in_flight and (lease.owner_task is None or lease.owner_task.done()):
            self.end_quarantine(lease, "the task that held it has ended")

    def lost(self, lease: Lease, reason: str) -> None:
        """The arbiter says a granted lease of this process lost the GPU: stop its work.

        As for a hung lease, its work is stopped (``stop`` called, tasks interrupted) and
        awaited: the lease ends, and the loss is reported, only once that work has ended.
        """
        if lease.state is not LeaseState.HELD or lease.granted_at is None:
            return  # a hung lease is being stopped already
        lease.state = LeaseState.LOST
        lease.lost_reason = reason
        lease.quarantined = True
        _interrupt(lease, "lost its lease")
        self._end_if_idle(lease)

    def end_quarantine(self, lease: Lease, why: str) -> None:
        """A hung lease's work has really ended (or is let go): free the GPU."""
        if not lease.quarantined or lease.granted_at is None:
            return
        lease.quarantined = False
        now = self._clock.monotonic()
        self._forget(lease)
        held_s = now - lease.granted_at
        if lease.state is LeaseState.LOST:
            detail = f"lease lost: {lease.lost_reason}; its work has ended ({why})"
            waited_s = lease.waited_s
            self._telemetry.ended(
                lease.ticket, GpuStatus.FAILED, waited_s=waited_s, held_s=held_s, detail=detail
            )
        else:
            detail = f"GPU free again: {why}" if why else "GPU handed on while its work may run"
            self._telemetry.recovered(lease.ticket, held_s=held_s, detail=detail)
        self._arbiter.release(lease.ticket, now)

    def release(self, lease: Lease) -> NoReturn:
        """An interrupted lease is released: end its quarantine and raise what happened."""
        self.end_quarantine(lease, "it was released")
        task = asyncio.current_task()
        if task is not None and task in lease.interrupted:
            lease.withdraw_interrupt(task)
        raise lease.interrupt_error()

    def cancelled_before_start(self, lease: Lease) -> None:
        """An interrupted lease's task was cancelled before it resumed from its grant.

        Raises what happened to the lease if that cancellation was only the guard's own;
        otherwise the caller re-raises the cancellation.
        """
        task = asyncio.current_task()
        self.end_quarantine(lease, "it was cancelled before it started")
        if task is not None and task in lease.interrupted and not lease.withdraw_interrupt(task):
            # Granted, then hung before it even resumed: the cancellation was the guard's
            # own, so report what happened instead.
            raise lease.interrupt_error() from None


def _interrupt(lease: Lease, why: str) -> None:
    """Cancel the tasks running ``lease``'s GPU work (or its opaque body)."""
    if lease.works:
        targets = [task for task in lease.works.values() if task is not None]
    elif not lease.tracked and lease.owner_task is not None:
        targets = [lease.owner_task]
    else:
        targets = []
    for task in targets:
        if not task.done():
            lease.interrupted.add(task)
            task.cancel(f"gpuguard: {lease.operation!r} {why}")
    lease.close_idle_streams()
