"""The host lease's decisions, taken under the directory's lock: who holds, who is next.

One :class:`Decisions` per arbiter. Each decision reads the state, removes the requests the
kernel says are dead (a dead holder's GPU teardown is waited for, :mod:`._teardown`), and
grants heads of the line for as long as the policy admits the head beside every holder
(:meth:`Decisions.grant_heads`, the rules of the process scope: only the head, in
:class:`~gpuguard.guard._queue.WaiterQueue` order). The policy counts each request by the
bytes its own process resolved (:attr:`.Entry.need`), so every process admits against the
same numbers.

Who is woken, so that a hand-off costs the same however many processes wait (the watch
chain, :meth:`Decisions.watch`): each waiting process watches one thing, the head's process
the holders' entries, every other process the entry of the request just ahead of its first
waiter. A holder that ends (release or death) wakes the head's process; a waiter that dies
or leaves wakes the process behind it, which looks again and watches on. A request of
another process granted here is told through its inbox (:mod:`._wake`) once the decision is
written, and under a sharing policy so is the process of the new head, which must now watch
every holder (under ``exclusive`` it already watches the one it was behind).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from ...._events import Priority
from ..._queue import DUE_EPSILON, WaiterQueue, effective_priority
from ..._tickets import Grant, Ticket
from ...policies import Policy
from ._lease_dir import LeaseDir
from ._repair import read_or_rebuild
from ._requests import Request, Requests
from ._state import Entry, HolderRecord, State
from ._teardown import POLL_S, TeardownWait

__all__ = ["Decisions", "Watch", "counted"]

RISE_SLACK_S = 0.01
"""A look for a waiter's rise by aging comes no sooner than this: a clock stopped just short
of a step (a test's fake one) would otherwise have the watcher spin."""


class Watch(NamedTuple):
    """What a waiting process's watcher sleeps on until something may have changed."""

    entries: list[int]
    """The entries (of other processes' requests) whose release or death matters to it."""
    rise_s: float | None
    """Seconds until one of its waiters rises a level by aging (None: never)."""


class Decisions:
    """Reads and decides the lease for one arbiter's process (its requests, its policy)."""

    def __init__(
        self,
        requests: Requests,
        policy: Policy,
        *,
        aging_s: float | None,
        teardown: TeardownWait,
    ) -> None:
        self._requests = requests
        self._policy = policy
        self._aging_s = aging_s
        self._teardown = teardown
        self._sharing = policy.name != "exclusive"

    def decide(self, lease_dir: LeaseDir, now: float) -> State:
        """Read the lease; remove the dead; grant the heads the policy admits."""
        state = self.read(lease_dir)
        mine = self._requests
        dead = [seq for seq in state.requests if seq not in mine and not lease_dir.alive(seq)]
        gone = {seq: state.requests.pop(seq) for seq in dead}
        teardown, before = state.teardown, (len(state.requests), len(state.holders))
        for record in [h for h in state.holders if h[0] in gone]:  # died holding
            self._teardown.died(state, gone[record[0]], now)
            state.holders.remove(record)
        considered = not state.holders or self._sharing
        blocked = considered and self._teardown.blocks(state, now)
        if considered and not blocked and state.waiting():
            self.grant_heads(lease_dir, state, now)
        mine.poll_s = POLL_S if blocked else None
        if dead or state.teardown != teardown or before != self._counts(state):
            lease_dir.write(state)
        for seq in dead:
            lease_dir.remove_entry(seq)
        mine.peers = self.peers(state)
        for seq, _, _ in state.holders:
            mine.schedule(mine.get(seq))
        return state

    def read(self, lease_dir: LeaseDir) -> State:
        """The state as written (:func:`.read_or_rebuild`); our vanished requests fail."""
        state, problem = read_or_rebuild(lease_dir, self._requests)
        for request in self._requests.values():
            if request.seq not in state.requests:  # someone rewrote the state without it
                self._requests.fail(request, problem, lease_dir)
        return state

    def queue(self, state: State) -> WaiterQueue[Entry]:
        """The waiters (every request that does not hold), in service order."""
        holding = {seq for seq, _, _ in state.holders}
        queue: WaiterQueue[Entry] = WaiterQueue(aging_s=self._aging_s)
        for seq in sorted(state.requests):
            if seq not in holding:
                entry = state.requests[seq]
                queue.push(seq, entry.ticket.priority, entry.enqueued_at, entry)
        return queue

    def place(self, state: State, seq: int, now: float) -> int:
        """Request ``seq``'s 1-based place in service order (the back if it waits no more)."""
        order = self.queue(state).order(now)
        return next((i for i, q in enumerate(order, 1) if q.item.seq == seq), len(order))

    def admits(self, state: State, entry: Entry) -> bool:
        """True if the policy admits ``entry`` beside every holder."""
        if not state.holders:
            return True  # the head always runs when nobody holds
        if not self._sharing:
            return False
        holders = [_counted_grant(state.requests[r[0]], r) for r in state.holders]
        return self._policy.admits(holders, counted(entry))

    def grant_heads(self, lease_dir: LeaseDir, state: State, now: float) -> list[Request]:
        """Grant the head of the line while the policy admits it; this process's grants."""
        mine: list[Request] = []
        queue = self.queue(state)
        holders = len(state.holders)
        while len(queue):
            entry = queue.peek_next(now).item
            request = self._requests.get(entry.seq)
            if request is not None and request.future is not None and request.future.done():
                queue.pop_next(now)
                del state.requests[entry.seq]  # its task was cancelled and has not run yet
                self._requests.close(request, lease_dir)
                continue
            if not self.admits(state, entry):
                break
            queue.pop_next(now)
            state.holders.append((entry.seq, now, None))
            if request is not None:
                mine.append(request)
            elif entry.wake is not None:
                self._requests.to_tell.append(entry.wake)
        if len(state.holders) > max(holders, 1) and len(queue):
            # The new head's process watched the one it was behind; now it must watch all.
            head = queue.peek_next(now).item
            if head.wake is not None:
                self._requests.to_tell.append(head.wake)
        self._requests.peers = self.peers(state)
        return mine

    def watch(self, state: State, now: float) -> Watch:
        """What this process's watcher waits on (the chain, see the module's docstring).

        The head's process: the holders' entries. Any other waiting process: the entry of
        the request just ahead of its first waiter; aging cannot move that one behind it
        before one of its own waiters rises a level, so it looks again then.
        """
        mine = self._requests
        ahead: int | None = None
        entries: list[int] = []
        for queued in self.queue(state).order(now):
            seq = queued.item.seq
            if seq in mine:
                if ahead is not None:
                    entries = [ahead]
                else:
                    entries = [h for h, _, _ in state.holders if h not in mine]
                break
            ahead = seq
        return Watch(entries, self._next_rise(state, now))

    def _next_rise(self, state: State, now: float) -> float | None:
        """Seconds until a waiter of this process rises a priority level (None: never)."""
        aging_s = self._aging_s
        if aging_s is None:
            return None
        rises = []
        for request in self._requests.values():
            entry = request.entry
            level = effective_priority(entry.ticket.priority, entry.enqueued_at, now, aging_s)
            if level < Priority.INTERACTIVE and state.holding(entry.seq) is None:
                waited = max(0.0, now - entry.enqueued_at) + DUE_EPSILON
                rises.append(max(RISE_SLACK_S, (waited // aging_s + 1) * aging_s - waited))
        return min(rises, default=None)

    def peers(self, state: State) -> frozenset[int]:
        """The pids of the other processes that hold this lease now."""
        return frozenset(
            state.requests[seq].ticket.owner.pid
            for seq, _, _ in state.holders
            if seq not in self._requests
        )

    def entry(self, ticket: Ticket, seq: int, now: float, wake: str) -> Entry:
        """A new request's entry, counted by this process's policy."""
        return Entry(seq, ticket, now, self._policy.need(ticket), wake)

    @staticmethod
    def _counts(state: State) -> tuple[int, int]:
        return len(state.requests), len(state.holders)


def counted(entry: Entry) -> Ticket:
    """``entry``'s ticket as the policy counts it: the bytes its own process resolved.

    Its model stays named when those are known (a resident model it uses counts once); an
    unknown need drops it, so no footprint of the deciding process stands in for it.
    """
    model = entry.ticket.model if entry.need is not None else None
    return dataclasses.replace(entry.ticket, memory_bytes=entry.need, model=model)


def _counted_grant(entry: Entry, record: HolderRecord) -> Grant:
    return Grant(counted(entry), record[1], record[2])
