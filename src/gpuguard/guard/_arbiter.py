"""Who holds the GPU and who waits for it: the arbiter, the one part that differs per scope.

A :class:`~gpuguard.GpuGuard` is a front (leases, hold timeouts, hung work, events) over an
arbiter that decides grants, one implementation per scope (:mod:`gpuguard.guard.scopes`): the
local arbiter decides within one process; the host-wide and Redis arbiters decide across
processes and hosts with the same rules:

* at most one holder under the exclusive policy (under a sharing one, the process and Redis
  arbiters grant the heads of the line while the policy admits them);
* a request is granted at once only when nobody holds *and nobody waits* (no queue jumping);
* a request joins with one decision (:meth:`Arbiter.enqueue`): granted at once, or queued
  with its place in line and the holder, so a shared scope is asked once per request;
* on release the next waiter in :class:`~gpuguard.guard._queue.WaiterQueue` order is granted;
* when nobody holds the GPU, nobody waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._tickets import Grant, Queued, Ticket
from .policies import Policy

__all__ = ["Arbiter", "Joined", "OnGrant", "OnLost", "holders_of", "lease_fd_of"]


OnGrant = Callable[[Ticket, float], None]
"""Called (in the event loop) when a queued ticket of this process is granted, with its wait."""

OnLost = Callable[[Ticket, str], None]
"""Called (in the event loop) when a granted ticket of this process lost the GPU, with why."""


@dataclass(frozen=True, slots=True)
class Joined:
    """:meth:`Arbiter.enqueue`'s answer when the line had room: the whole of one decision.

    Granted at once (``pending`` is None: nobody waited and the policy admitted it, the rule
    of :meth:`Arbiter.try_acquire`), or queued: the future of its grant, with its 1-based
    place in line and the holder it waits behind as that same decision saw them, so its
    ``waiting`` event needs no further look at the shared state.
    """

    pending: asyncio.Future[None] | None
    position: int = 0
    holder: Grant | None = None


class Arbiter(Protocol):
    """Decides who holds the GPU; one implementation per scope (process, host, Redis).

    Taking the GPU or a place in the queue is async (a shared scope asks its server); a scope
    that ``decides_locally`` keeps its state in this process, so the front first tries
    :meth:`try_acquire_now`, without awaiting, as a refusal costs it nothing. A shared scope
    (host, Redis) is asked once per request instead: :meth:`enqueue` grants at once or
    queues in one decision. Giving it back (``withdraw``,
    ``release``) is sync and done when it returns: the next waiter is granted in the same
    step, and ``on_grant`` runs then for a waiter of this process. A shared scope makes one
    bounded round trip for it; if its server cannot be told, the server's lease expiry frees
    the GPU.
    """

    @property
    def scope(self) -> str:
        """``process``, ``host`` or ``redis``."""

    @property
    def policy(self) -> Policy:
        """Who may hold at once (:mod:`gpuguard.guard.policies`)."""

    @property
    def decides_locally(self) -> bool:
        """True if this process holds the state itself: a refused try costs no shared look."""

    @property
    def issues_fences(self) -> bool:
        """True if grants carry a fencing token (:attr:`Grant.fence`); else it is always None."""

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Tell the arbiter whom to call when a ticket of this process is granted or lost."""

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """:meth:`try_acquire` without awaiting (a shared scope: one bounded round trip)."""

    async def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """Grant ``ticket`` at once if nobody holds and nobody waits; else return False."""

    async def enqueue(self, ticket: Ticket, now: float, *, limit: int) -> Joined | None:
        """Grant ``ticket`` at once, or queue it if fewer than ``limit`` wait; else None.

        One decision: granted at once by the rule of :meth:`try_acquire`, else queued.

        A queued ticket's future resolves when it is granted (after ``on_grant``); a grant
        at once does not call ``on_grant``.
        """

    def withdraw(self, ticket: Ticket) -> bool:
        """Take a queued ticket out of the line; False if it was granted or gone already.

        A shared scope may learn only now that the ticket was granted: it calls ``on_grant``
        first, then returns False.
        """

    def release(self, ticket: Ticket, now: float) -> None:
        """The holder gives the GPU back; the next waiter is granted."""

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Show the holder as hung (its work is being stopped; the GPU stays quarantined)."""

    def holder(self) -> Grant | None:
        """The current holder, or None."""

    def waiters(self, now: float) -> list[Queued]:
        """Every waiter, in service order."""

    def queue_length(self) -> int:
        """How many tickets wait."""

    async def aclose(self) -> None:
        """Let go of connections and background tasks (a no-op in-process)."""


@runtime_checkable
class _Sharing(Protocol):
    """An arbiter that may grant several holders at once (a sharing policy)."""

    def holders(self) -> tuple[Grant, ...]:
        """Every current grant, oldest first."""


def holders_of(arbiter: Arbiter) -> tuple[Grant, ...]:
    """Every grant that holds the GPU now, oldest first (one at most, unless it shares)."""
    if isinstance(arbiter, _Sharing):
        return arbiter.holders()
    holder = arbiter.holder()
    return () if holder is None else (holder,)


@runtime_checkable
class _Inheriting(Protocol):
    """An arbiter whose grant is a kernel lock that a program's processes can inherit."""

    def lease_fd(self, ticket: Ticket) -> int | None:
        """A new descriptor that keeps ``ticket``'s grant while any process has it open."""


def lease_fd_of(arbiter: Arbiter, ticket: Ticket) -> int | None:
    """``arbiter``'s inheritable descriptor of held ``ticket``; None where it has none.

    Only the host scope has one (its request's ``flock``-ed entry). In-process and Redis
    grants are no kernel object: nothing a child process could keep.
    """
    return arbiter.lease_fd(ticket) if isinstance(arbiter, _Inheriting) else None
