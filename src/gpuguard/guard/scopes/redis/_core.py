"""The Redis scope's side in one process: its tickets, taken and lost on Redis's answers.

:class:`LeaseCore` keeps this process's tickets (:class:`~._view.LeaseView`), talks to Redis
(:mod:`._link`), hears its messages (:mod:`._listener`) and beats (:mod:`._heartbeat`); it
takes a grant that a state from Redis names, gives back what nobody here wants, and loses a
grant that a later state no longer names. :class:`~._arbiter.RedisArbiter` builds the
arbiter's calls on it.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ...._clock import Clock, SystemClock
from ...._exceptions import GuardUnavailable
from ..._arbiter import OnGrant, OnLost
from ..._tickets import Grant, Ticket
from ...policies import EXCLUSIVE, Policy
from .._mark import GpuMarker
from .._teardown import TEARDOWN_S, GpuPids, TeardownRule
from ._heartbeat import Heartbeat, Held
from ._link import RedisLink
from ._listener import GrantListener
from ._mirror import grants, heard_grant, ticket_json
from ._pending import PendingCalls, told_too_late
from ._sharing import Sharing
from ._teardown import HeldBack
from ._view import PLACE_GONE, LeaseView, Mine

__all__ = ["LeaseCore"]


class LeaseCore:
    """The tickets of this process in one Redis lease, held to Redis's answers.

    Args: see :class:`~._arbiter.RedisArbiter`.
    """

    scope = "redis"

    def __init__(
        self,
        client: aioredis.Redis[bytes],
        sync_client: redis.Redis[bytes],
        name: str = "gpu0",
        *,
        aging_s: float | None = 30.0,
        ttl_s: float = 2.0,
        prefix: str = "gpuguard",
        clock: Clock | None = None,
        queue_clock: Clock | None = None,
        policy: Policy = EXCLUSIVE,
        gpu_pids: GpuPids | None = None,
        teardown_s: float = TEARDOWN_S,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError("ttl_s must be > 0")
        self.policy = policy
        self._sharing = Sharing(policy)
        self.key = f"{prefix}:{{{name}}}"
        self.ttl_s = ttl_s
        self.heartbeat_s = ttl_s / 5
        self.fence_margin_s = ttl_s / 4
        self._client_id = uuid.uuid4().hex[:12]
        self._secret = secrets.token_hex(16)  # signs this process's grant messages
        self._redis_time: tuple[float, int] | None = None
        """The latest answer's send time here and Redis ``TIME`` (ms) when it ran."""
        self._link = RedisLink(
            client,
            sync_client,
            self.key,
            client_id=self._client_id,
            mine=lambda: self._view.mine.keys(),
            aging_s=aging_s,
            beat_timeout_s=self.fence_margin_s,
            queue_clock=queue_clock,
        )
        self._clock = clock if clock is not None else SystemClock()
        self.teardown_s = teardown_s
        rule = TeardownRule(gpu_pids, teardown_s)
        self._held_back = HeldBack(rule, self._clock, self._teardown_over)
        where = f"the Redis lease {self.key}"
        self._mark = GpuMarker(name, where) if policy is EXCLUSIVE else None  # while holding
        self._ids: dict[int, str] = {}
        self._view = LeaseView(self._client_id, aging_s)
        self._pending = PendingCalls()
        self._listener = GrantListener(self._link, on_change=self._look, on_grant=self._heard)
        ttl_ms = str(int(ttl_s * 1000))
        self._heartbeat = Heartbeat(
            self._view.mine.copy,
            functools.partial(self._link.beat, client_id=self._client_id, ttl_ms=ttl_ms),
            ttl_s=ttl_s,
            every_s=self.heartbeat_s,
            margin_s=self.fence_margin_s,
        )
        self._on_grant: OnGrant = _ignore
        self._on_lost: OnLost = _ignore

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant and loss callbacks."""
        self._on_grant, self._on_lost = on_grant, on_lost

    def _track(self, ticket: Ticket, now: float) -> tuple[str, Mine]:
        """Start keeping ``ticket`` as one of this process's: its Redis id and its record."""
        tid = self._ids.setdefault(ticket.lease_id, f"{self._client_id}:{ticket.lease_id}")
        future = asyncio.get_running_loop().create_future()
        share = self._sharing.share(ticket, self._view.holders())
        tk = ticket_json(
            ticket, self._client_id, self.ttl_s, self.teardown_s, share, secret=self._secret
        )
        mine = self._view.mine[tid] = Mine(ticket, tk, now, future)
        self._heartbeat.poke()
        return tid, mine

    def _abandoned(self, tid: str, mine: Mine) -> None:
        """Redis answered a request whose task was cancelled meanwhile: undo what it did."""
        if self._view.mine.get(tid) is mine:
            del self._view.mine[tid]
        self._give_back("drop", tid, "")

    def _granted(
        self, tid: str, mine: Mine, state: dict[str, Any], *, waited_s: float, notify: bool = False
    ) -> bool:
        """Redis's answer ``state`` names ``mine`` as a holder: take the grant here.

        False if it was not taken: its task gave up, or the policy here refuses it beside the
        others (then a waiter goes back to the head of its line, to be granted alone, and a
        request that would not wait (``Mine.waits`` False) gives the grant back), or a dead
        holder's GPU context may still be in use and it would not wait (a waiter's grant is
        taken, and reported once that is over: :mod:`._teardown`).
        """
        if mine.fence is not None:
            return True  # both a request's answer and a later read say so; the first counts
        grant = next(h for h in grants(state) if h["t"] == tid)
        fence, mine.version = grant["f"], state["v"]
        older = [g for g in self._view.holders() if (g.fence or 0) < int(fence)]
        refused = self._sharing.refuses(mine.ticket, older)  # later grants check against it
        dead = None if mine.gave_up or refused else self._held_back.dead_holder(state)
        stays = mine.waits and not mine.leaving  # it may wait for the grant to be reported
        if mine.gave_up or (refused and not mine.waits) or (dead is not None and not stays):
            # Its task gave up before the grant reached this process: hand the GPU on (once).
            if self._view.mine.get(tid) is mine:
                del self._view.mine[tid]
                self._give_back("release", tid, fence)
            return False
        if refused:
            self._give_back("requeue", tid, fence)
            return False
        mine.fence = fence
        if self._mark is not None:
            self._mark.take()
        floor = int(grant.get("lo") or fence)  # the oldest grant beside it, itself if alone
        mine.grant = Grant(
            mine.ticket, self._clock.monotonic(), fence=int(fence), fence_floor=floor
        )
        self._confirm(state["sent"] + max(0, grant["pttl"]) / 1000.0, mine)
        if dead is not None:
            self._held_back.hold_back(tid, dead)
        else:
            self._report(mine, waited_s, notify)
        return True

    def _report(self, mine: Mine, waited_s: float, notify: bool) -> None:
        """Tell the guard that ``mine`` holds the GPU now."""
        if notify:
            self._on_grant(mine.ticket, waited_s)
        if not mine.future.done():
            mine.future.set_result(None)

    def _teardown_over(self, tid: str) -> None:
        """A grant held back for a dead holder's GPU teardown starts now (a waiter's)."""
        mine = self._view.mine.get(tid)
        if mine is not None and mine.fence is not None:
            self._report(mine, self._clock.monotonic() - mine.requested_at, notify=True)

    def _confirm(self, until: float, taken: Mine | None = None) -> None:
        """Redis keeps what this process asked for until ``until``.

        Grants this process held before were confirmed on their own; only a beat renews them.
        """
        held = [m for _, m in self._view.holding() if m is not taken]
        self._heartbeat.confirm(until, lower_only=bool(held))

    def _reconcile(self, state: dict[str, Any], asked: str | None) -> None:
        """Hold this process's tickets to what Redis says (:meth:`LeaseView.verdicts`).

        ``state`` answers ticket ``asked``'s request (None: no request's): a grant it names
        was made at once, and that request reports it, not ``on_grant``.
        """
        verdicts = self._view.verdicts(state)
        for tid, mine in verdicts.granted:
            waited = self._clock.monotonic() - mine.requested_at
            self._granted(tid, mine, state, waited_s=waited, notify=tid != asked)
        for tid, reason in verdicts.lost:
            self._lose(tid, reason)
        for tid, mine in verdicts.gone:
            self._drop_waiter(tid, mine, PLACE_GONE)
        for tid, fence in verdicts.unwanted:
            self._pending.spawn(self._call("release", tid, fence, ""))

    def _give_back(self, op: str, tid: str, arg: str, extra: str = "") -> None:
        """Tell Redis now; a grant it makes to a waiter of this process is taken at once."""
        try:
            self._call_now(op, tid, arg, extra)
        except RedisError as exc:
            told_too_late(exc)

    # --- talking to Redis -----------------------------------------------------------------

    async def _call(
        self, op: str, tid: str, arg: str, extra: str, fence: str = ""
    ) -> dict[str, Any]:
        return self._answer(await self._link.call(op, tid, arg, extra, fence))

    def _call_now(self, op: str, tid: str, arg: str, extra: str) -> dict[str, Any]:
        """:meth:`_call` on the synchronous connection: done when it returns."""
        return self._answer(self._link.call_now(op, tid, arg, extra))

    def _answer(self, state: dict[str, Any], asked: str | None = None) -> dict[str, Any]:
        """Read a transition's answer: the newest view of the lease, and any grant it names.

        ``asked``: the ticket whose request it answers (see :meth:`_reconcile`).
        """
        if self._redis_time is None or state["sent"] > self._redis_time[0]:
            self._redis_time = (state["sent"], state["t"])
        if state["v"] >= self._view.mirror.version:
            self._view.read(state, self._clock.monotonic())
            self._heartbeat.saw(state, self._view.is_mine)
            self._reconcile(state, asked)
        return state

    def _start_tasks(self) -> None:
        """Start listening for grants and beating, if not yet (or after a failed start)."""
        self._listener.start()
        self._heartbeat.start(self._beaten, self._expired)

    async def _start(self, ticket: Ticket) -> None:
        self._start_tasks()
        try:
            await self._listener.subscribed()
        except RedisError as exc:
            raise self._unavailable(ticket, exc) from exc

    def _look(self, version: int | None) -> None:
        """A message says the lease changed: read the state in Redis (which decides)."""
        if version is None or version > self._view.mirror.version:  # not seen here yet
            self._pending.coalesce(lambda: self._call("state", "", "", ""))

    def _heard(self, note: str) -> None:
        """A grant message: take a grant Redis made alone and signed for this process; else look.

        A grant beside others, or to a request whose answer is still on its way, is read from
        the state as before (the policy's last word needs the holders; the answer comes first),
        and so is one to a ticket this process gave up on (the state read gives it back).
        """
        heard = heard_grant(note, self._secret)
        mine = self._view.mine.get(heard.tid) if heard is not None else None
        if heard is None or mine is None or self._redis_time is None:
            self._look(None)
        elif mine.fence is not None:
            return  # an answer named it first
        elif (
            mine.gave_up
            or mine.leaving
            or (mine.asking is not None and not mine.asking.done())
            or heard.floor != int(heard.fence)
            or heard.version <= mine.version
        ):
            self._look(None)
        else:
            view = self._view.mirror  # granted alone: every older grant there is gone
            view.holders = [h for h in view.holders if int(h[1]) > heard.floor]
            view.version = max(view.version, heard.version)
            waited = self._clock.monotonic() - mine.requested_at
            answer = heard.answer(*self._redis_time)
            self._granted(heard.tid, mine, answer, waited_s=waited, notify=True)

    def _lose(self, tid: str, reason: str) -> None:
        mine = self._view.mine.pop(tid, None)
        if mine is not None and mine.fence is not None:
            if self._mark is not None:
                self._mark.drop()
            if not self._held_back.cancel(tid):
                self._on_lost(mine.ticket, reason)
            elif not mine.future.done():  # never reported held: its request fails instead
                mine.future.set_exception(self._unavailable(mine.ticket, reason))

    def _beaten(self, state: dict[str, Any], renewed: Sequence[Held]) -> None:
        """The heartbeat thread's answer, in the loop: the state, and grants found gone."""
        self._answer(state)
        lost = set(state["x"].split()) if state["r"] == "lost" else set()
        for tid, fence, _ in renewed:
            mine = self._view.mine.get(tid)
            if tid in lost and mine is not None and mine.fence == fence:
                self._lose(tid, "its grant was gone or taken over when it renewed it")

    def _expired(self, reason: str) -> None:
        """No beat confirmed this process in time: fence its grant, fail its waiters."""
        if not self._heartbeat.lapsed:
            return  # confirmed since (a grant or a place taken just now, on a fresh answer)
        for tid, mine in list(self._view.mine.items()):
            if mine.fence is not None:
                self._lose(tid, reason)
            elif mine.asking is None or mine.asking.done():
                self._drop_waiter(tid, mine, f"Redis did not answer in time ({reason})")

    def _drop_waiter(self, tid: str, mine: Mine, reason: str) -> None:
        del self._view.mine[tid]
        if not mine.future.done():
            mine.future.set_exception(self._unavailable(mine.ticket, reason))

    def _unavailable(self, ticket: Ticket, why: object) -> GuardUnavailable:
        op, model = ticket.operation, ticket.model
        return GuardUnavailable(operation=op, model=model, scope=self.scope, reason=str(why))


def _ignore(ticket: Ticket, value: Any) -> None:
    """The default callbacks, before a guard binds its own."""
