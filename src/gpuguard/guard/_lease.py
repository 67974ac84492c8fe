"""A grant of the GPU (:class:`Lease`), the GPU work it covers, and ``async with`` holds.

A lease belongs to its holder object, not to an asyncio task. GPU work runs under it through
:meth:`Lease.run` (one awaitable) or :meth:`Lease.stream` (a stream of chunks): the lease
knows which work is in flight and which task awaits it, so a hung operation is stopped
through its work, whichever task happens to drive it (a streamed answer is resumed by
whatever task reads the stream). A lease that never ran tracked work is an opaque body: on
hang the task that entered it is interrupted.

A lease talks to the guard that granted it through one small interface, :class:`Keeper`,
which the guard hands it: give the GPU back, say why a lease can no longer be used, and hear
that a hung lease's last piece of work has stopped.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

from .._clock import Clock, TimerHandle
from .._events import Priority
from .._exceptions import GuardError, LeaseLost, OperationHung
from ._fences import FenceBook, under_fence
from ._tickets import Ticket
from ._work import OnceClosed, StopWork, run_to_end

__all__ = ["Keeper", "Lease", "LeaseState"]

logger = logging.getLogger("gpuguard.work")

R = TypeVar("R")
T = TypeVar("T")


class LeaseState(enum.Enum):
    """Where a lease is in its life."""

    WAITING = "waiting"
    HELD = "held"
    HUNG = "hung"
    LOST = "lost"
    RELEASED = "released"
    ABANDONED = "abandoned"


class Keeper(Protocol):
    """What a lease needs from the guard that granted it (handed to it at creation)."""

    def release(self, lease: Lease) -> None:
        """Give ``lease``'s GPU back and hand it to the next waiter."""

    def refusal(self, lease: Lease) -> GuardError:
        """The error for using ``lease`` now that it is not held (hung, lost, released)."""

    def work_stopped(self, lease: Lease) -> None:
        """The last tracked work of hung ``lease`` has ended: its quarantine may end."""

    @property
    def fences(self) -> FenceBook:
        """The newest fencing token seen for the GPU; work under an older one is refused."""


class Lease:
    """One grant of the GPU to one operation.

    Obtained from :meth:`GpuGuard.acquire` (release it with :meth:`release`) or, better, from
    ``async with guard.hold(...) as lease``. Run the GPU work itself through :meth:`run` or
    :meth:`stream`, so that the lease is held until the work has really stopped and a hung
    operation can be stopped through its work.
    """

    # What a new lease starts with, as class attributes: a lease is made on every request.
    granted_at: float | None = None
    hung_at: float | None = None
    timer: TimerHandle | None = None
    quarantined = False
    """True while hung and still holding the GPU, until its work has really ended."""
    tracked = False
    fence: int | None = None
    """The fencing token of the grant, on scopes that issue them (Redis)."""
    fence_floor: int | None = None
    """The oldest token still holding when it was granted (:attr:`Grant.fence_floor`)."""
    lost_reason: str | None = None

    def __init__(
        self, keeper: Keeper, ticket: Ticket, hold_timeout: float | None, clock: Clock
    ) -> None:
        self.keeper = keeper
        """The guard's side of this lease; a lease is used only with its own keeper."""
        self.ticket = ticket
        self.hold_timeout = hold_timeout
        self.clock = clock
        self.requested_at = clock.monotonic()
        self.state = LeaseState.WAITING
        self.owner_task = _running_task()
        """Interrupted on hang if no tracked work ever ran (an opaque ``async with`` body):
        the task that asked for the lease, then the one that entered ``async with``. None
        in synchronous code (``acquire_nowait`` outside an event loop)."""
        self.works: dict[object, asyncio.Task[object] | None] = {}
        """Tracked work in flight, each with the task awaiting it."""
        self.streams: dict[OnceClosed[Any], StopWork | None] = {}
        """Open streams (:meth:`stream`), each with its ``stop``: GPU work until closed."""
        self._closers: set[asyncio.Task[None]] = set()
        self.interrupted: set[asyncio.Task[object]] = set()
        """Tasks the guard cancelled because this lease hung; their cancel is withdrawn."""

    @property
    def lease_id(self) -> int:
        """Unique within the guard."""
        return self.ticket.lease_id

    @property
    def operation(self) -> str:
        """What the GPU is held for (``chat``, ``load``, ``embed``...)."""
        return self.ticket.operation

    @property
    def model(self) -> str | None:
        """The model the operation works on."""
        return self.ticket.model

    @property
    def priority(self) -> Priority:
        """The declared priority."""
        return self.ticket.priority

    @property
    def held(self) -> bool:
        """True while this lease holds the GPU and is not hung."""
        return self.state is LeaseState.HELD

    @property
    def hung(self) -> bool:
        """True once this lease outlived its hold timeout."""
        return self.state is LeaseState.HUNG

    @property
    def stopping(self) -> bool:
        """True once hung or lost: its work is being stopped, and only then does it end."""
        return self.state in (LeaseState.HUNG, LeaseState.LOST)

    @property
    def in_flight(self) -> bool:
        """True while tracked work runs or a stream of this lease is open."""
        return bool(self.works or self.streams)

    @property
    def waited_s(self) -> float:
        """Seconds between the request and the grant (0 if never granted)."""
        return 0.0 if self.granted_at is None else self.granted_at - self.requested_at

    async def run(self, work: Awaitable[R], *, stop: StopWork | None = None) -> R:
        """Run ``work`` as GPU work of this lease and return its result.

        The lease is held until ``work`` has really ended, even if the caller is cancelled
        meanwhile: the cancellation is passed on to ``work`` (an honest awaitable ends soon
        after; see :mod:`gpuguard.guard._work`). ``stop`` is for hung work: if the lease outlives
        its hold timeout, ``stop`` is called (kill the worker, ask the server to cancel), and
        once the work has ended this raises :class:`OperationHung`. A plain cancellation (a
        client that went away) never calls it. Raises at once, without starting ``work``, if
        the lease is hung or no longer held, or (:class:`StaleFence`) if its fencing token is
        older than the newest the guard has seen for the GPU: the lease was taken over.
        """
        if self.state is not LeaseState.HELD:
            _discard(work)
            raise self.keeper.refusal(self)
        if self.fence is not None:
            try:
                self.keeper.fences.admit(
                    self.fence, operation=self.operation, model=self.model, floor=self.fence_floor
                )
            except GuardError:
                _discard(work)
                raise
            work = under_fence(work, self.keeper.fences.gpu, self.fence, self.fence_floor)
        self.tracked = True
        task = asyncio.current_task()
        token = object()
        self.works[token] = task
        try:
            return await run_to_end(work, stop=None if stop is None else self._if_hung(stop))
        except asyncio.CancelledError:
            if task is not None and task in self.interrupted and not self.withdraw_interrupt(task):
                raise self.interrupt_error() from None
            raise
        finally:
            del self.works[token]
            self._if_all_stopped()

    def _if_all_stopped(self) -> None:
        """Tell the keeper when a hung or lost lease's last work (step or stream) has ended."""
        if self.stopping and not self.in_flight:
            self.keeper.work_stopped(self)

    def _if_hung(self, stop: StopWork) -> StopWork:
        """``stop``, called only when this lease hung or was lost (not for a plain cancel)."""

        async def stop_if_hung() -> None:
            if self.stopping:
                result = stop()
                if result is not None:
                    await result

        return stop_if_hung

    async def stream(
        self, chunks: AsyncIterator[T], *, stop: StopWork | None = None
    ) -> AsyncGenerator[T, None]:
        """Yield ``chunks``, each step run as GPU work of this lease (see :meth:`run`).

        The stream is GPU work of the lease from its first step until it is closed: its
        producer may run ahead of a stalled reader. If the lease hangs while nobody reads,
        the lease closes ``chunks`` itself (after ``stop``), and only then frees the GPU.
        Closing this generator closes ``chunks`` and returns once that has ended.
        """
        source: OnceClosed[T] = OnceClosed(_as_generator(chunks))
        self.streams[source] = None if stop is None else self._if_hung(stop)
        try:
            while True:
                try:
                    chunk = await self.run(source.step(), stop=stop)
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            try:
                await source.aclose()
            finally:
                self._stream_closed(source)

    def close_idle_streams(self) -> None:
        """Close every open stream that nobody is reading now (this lease hung or was lost).

        A stream being read is stopped through the step in flight instead; its reader closes it.
        """
        for source, stop in list(self.streams.items()):
            if not source.stepping and not source.closing:
                closer = asyncio.ensure_future(self._close_idle(source, stop))
                self._closers.add(closer)
                closer.add_done_callback(self._closers.discard)

    async def close_streams(self) -> None:
        """Close the streams its body left open (no reader will come back) and wait for it."""
        for source in [source for source in self.streams if not source.stepping]:
            await self._close_idle(source, None)

    async def _close_idle(self, source: OnceClosed[Any], stop: StopWork | None) -> None:
        try:
            await source.aclose(stop)
        except Exception as exc:
            logger.warning("closing the stream of %r failed: %r", self.operation, exc)
        finally:
            self._stream_closed(source)

    def _stream_closed(self, source: OnceClosed[Any]) -> None:
        self.streams.pop(source, None)
        self._if_all_stopped()

    def release(self) -> None:
        """Give the GPU back and hand it to the next waiter.

        Raises :class:`LeaseNotHeld` if the lease was never granted or already released, and
        :class:`OperationHung` if it hung (its quarantine ends here).
        """
        self.keeper.release(self)

    def interrupt_error(self) -> GuardError:
        """What this hung or lost lease's holder gets: :class:`OperationHung`/:class:`LeaseLost`."""
        if self.state is LeaseState.LOST:
            return LeaseLost(
                operation=self.operation,
                model=self.model,
                reason=self.lost_reason or "lost",
                fence=self.fence,
            )
        granted = self.granted_at if self.granted_at is not None else self.clock.monotonic()
        return OperationHung(
            operation=self.operation, model=self.model, held_s=self.clock.monotonic() - granted
        )

    def withdraw_interrupt(self, task: asyncio.Task[object]) -> bool:
        """Undo the guard's cancel of ``task``; True if someone else still cancels it."""
        self.interrupted.discard(task)
        return task.uncancel() > 0

    def __repr__(self) -> str:
        model = f" model={self.model!r}" if self.model else ""
        return (
            f"<Lease #{self.lease_id} {self.operation!r}{model} {self.priority} {self.state.value}>"
        )


async def _as_generator(chunks: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """Wrap any async iterator so that closing the wrapper closes it where it can be closed."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _running_task() -> asyncio.Task[object] | None:
    """The task running now, or None outside an event loop (synchronous code)."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running event loop
        return None


def _discard(work: Awaitable[object]) -> None:
    """Close a coroutine that will never be awaited (no "never awaited" warning)."""
    close = getattr(work, "close", None)
    if asyncio.iscoroutine(work) and close is not None:
        close()
