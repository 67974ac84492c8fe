"""Running long jobs in the background: start, list with progress, get, wait, cancel.

At most ``max_running`` jobs of one kind run at once; later ones wait, ``queued``, in the
order they were started. The queue is bounded, in all (``max_queued``) and per caller
(``max_queued_per_caller``): past either bound a start raises :class:`~gpuguard.JobQueueFull`
with a Retry-After estimate, so a flood of jobs cannot delay the next caller's for hours.
Progress events are read from the bus as they arrive (a follower task), so a job nobody
polls never fills its subscription.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from .._events import Event, EventBus, JobEvent, Subscription
from .._exceptions import JobError, JobNotFound, JobQueueFull
from .._redact import redact
from ._progress import new_job_id

__all__ = ["JobInfo", "JobManager", "JobStatus"]

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]

MAX_ISSUES = 200
"""How many skipped sources a :class:`JobInfo` lists (the result counts them all)."""


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one job: what, its state, its latest progress and its outcome.

    ``job`` names what it does (``schema-refresh``, ``rag-indexing``: the same word as its
    :class:`~gpuguard.JobEvent` s' ``job``), ``source`` what it works on, shown to users (a
    folder, a database URL with its password masked). ``done``/``total``/``detail`` mirror
    the job's latest event and ``issues`` the sources it skipped so far (``"path: why"``,
    at most :data:`MAX_ISSUES`);
    ``result`` is what the job returned (when completed), ``error`` why it failed.
    """

    id: str
    job: str
    status: JobStatus
    started_at: float
    finished_at: float | None = None
    done: int = 0
    total: int | None = None
    detail: str = ""
    error: str | None = None
    result: Any = None
    source: str = ""
    issues: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the result through its own ``to_dict`` when it has one)."""
        result = self.result
        if hasattr(result, "to_dict"):
            result = result.to_dict()
        return {
            "id": self.id,
            "job": self.job,
            "source": self.source,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "done": self.done,
            "total": self.total,
            "detail": self.detail,
            "error": self.error,
            "issues": list(self.issues),
            "result": result,
        }


class JobManager:
    """Runs jobs as asyncio tasks, each under a fresh id, and remembers the last ones.

    Jobs report progress by publishing :class:`~gpuguard.JobEvent` s with their id to
    ``events`` (the indexing jobs do when given ``events`` and ``job_id``); the manager
    follows the bus and mirrors the latest progress into :class:`JobInfo`. At most
    ``max_running`` jobs of each kind run at once (``None``: no limit), the others wait
    ``queued``. Unfinished jobs are always kept; at most ``history`` finished ones are
    remembered, oldest forgotten first. Errors are kept with their secrets masked.
    """

    def __init__(
        self,
        *,
        events: EventBus | None = None,
        history: int = 50,
        max_running: int | None = 1,
        max_queued: int | None = 32,
        max_queued_per_caller: int | None = 8,
    ) -> None:
        if history < 0:
            raise ValueError("history must be >= 0")
        if max_running is not None and max_running < 1:
            raise ValueError("max_running must be >= 1 or None")
        if any(bound is not None and bound < 0 for bound in (max_queued, max_queued_per_caller)):
            raise ValueError("the queue bounds must be >= 0 or None")
        self.events = events
        self.history = history
        self.max_running = max_running
        self.max_queued = max_queued
        self.max_queued_per_caller = max_queued_per_caller
        self._callers: dict[str, str] = {}  # queued job id -> who started it
        self._jobs: dict[str, JobInfo] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._running: Counter[str] = Counter()
        self._holding: dict[str, str] = {}  # job id -> job name, for jobs with a running place
        self._queued: dict[str, deque[tuple[str, asyncio.Future[None]]]] = {}
        self._progress: Subscription | None = (
            None if events is None else events.subscribe(kinds={"job"})
        )
        self._follower: asyncio.Task[None] | None = None

    def start(
        self,
        job: str,
        coro_factory: Callable[[str], Awaitable[Any]],
        *,
        source: str = "",
        caller: str = "",
    ) -> JobInfo:
        """Start ``coro_factory(job_id)`` as a background task; returns its first snapshot.

        Must be called with an event loop running. ``job`` names the job for listings and
        ``source`` says what it works on; neither may hold a secret. ``caller`` says who
        asked (any stable key, never a secret), for the per-caller bound on queued jobs.
        Raises :class:`~gpuguard.JobQueueFull` (nothing started) when the job would have
        to wait and the queue is full.
        """
        if not self._may_run_now(job):
            self._check_room(job, caller)
        job_id = new_job_id()
        try:
            work = coro_factory(job_id)
        except Exception as exc:
            raise JobError(f"cannot start a {job} job: {exc}") from exc
        turn = self._claim(job, job_id)
        if turn is not None:
            self._callers[job_id] = caller
        status: JobStatus = "running" if turn is None else "queued"
        self._jobs[job_id] = JobInfo(
            id=job_id, job=job, source=source, status=status, started_at=time.time()
        )
        task = asyncio.ensure_future(self._run(job_id, turn, work))
        self._tasks[job_id] = task
        task.add_done_callback(lambda finished: self._finished(job_id, finished, work))
        self._follow()
        return self._jobs[job_id]

    def _may_run_now(self, job: str) -> bool:
        return self.max_running is None or self._running[job] < self.max_running

    def _check_room(self, job: str, caller: str) -> None:
        """Raise :class:`JobQueueFull` when one more queued job would pass a bound."""
        queued = [job_id for queue in self._queued.values() for job_id, _turn in queue]
        mine = sum(1 for job_id in queued if self._callers.get(job_id) == caller)
        if self.max_queued is not None and len(queued) >= self.max_queued:
            full = f"{len(queued)} jobs are waiting (at most {self.max_queued})"
        elif self.max_queued_per_caller is not None and mine >= self.max_queued_per_caller:
            full = f"{mine} of your jobs are waiting (at most {self.max_queued_per_caller})"
        else:
            return
        raise JobQueueFull(
            f"cannot queue a {job} job: {full}", retry_after_s=self._typical_duration(job)
        )

    def _typical_duration(self, job: str) -> float:
        """How long a recent job of this kind took (10 s when none finished yet)."""
        took = [
            info.finished_at - info.started_at
            for info in self._jobs.values()
            if info.job == job and info.finished_at is not None
        ]
        return max(1.0, sum(took[-10:]) / len(took[-10:])) if took else 10.0

    def _claim(self, job: str, job_id: str) -> asyncio.Future[None] | None:
        """``None`` when the job may run now; else the future that says its turn came."""
        if self._may_run_now(job):
            self._running[job] += 1
            self._holding[job_id] = job
            return None
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(job, deque()).append((job_id, turn))
        return turn

    def _hand_on(self, job_id: str) -> None:
        """A job that held a running place ended: the next queued job of that name gets it."""
        job = self._holding.pop(job_id)
        queue = self._queued.get(job, deque())
        while queue:
            next_id, turn = queue.popleft()
            if not turn.done():
                self._holding[next_id] = job
                turn.set_result(None)
                return
        self._running[job] -= 1

    async def _run(
        self, job_id: str, turn: asyncio.Future[None] | None, work: Awaitable[Any]
    ) -> Any:
        if turn is not None:
            try:
                await turn
            finally:
                self._callers.pop(job_id, None)
            self._jobs[job_id] = replace(self._jobs[job_id], status="running")
        return await work

    def _follow(self) -> None:
        """Start reading progress events as they come (once, from inside the event loop)."""
        if self._progress is not None and self._follower is None:
            self._follower = asyncio.create_task(self._read_progress(self._progress))

    async def _read_progress(self, subscription: Subscription) -> None:
        while True:
            try:
                event = await subscription.get()
            except EOFError:
                return
            self._apply(event)

    def list(self) -> list[JobInfo]:
        """Every remembered job, oldest first."""
        self._follow_progress()
        return list(self._jobs.values())

    def get(self, job_id: str) -> JobInfo:
        """The job's latest snapshot; :class:`JobNotFound` for an unknown (or forgotten) id."""
        self._follow_progress()
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(f"no job with id {job_id!r}") from None

    async def wait(self, job_id: str) -> JobInfo:
        """Wait until the job has finished, however it ends, and return its snapshot."""
        info = self.get(job_id)
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.wait([task])
        return self.get(info.id)

    async def cancel(self, job_id: str) -> JobInfo:
        """Cancel a running job and wait for it to stop; a finished job is left as it is."""
        self.get(job_id)
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        return await self.wait(job_id)

    async def aclose(self) -> None:
        """Cancel every running job, wait for them, and stop following the bus."""
        for job_id in list(self._tasks):
            await self.cancel(job_id)
        if self._progress is not None:
            self._progress.close()
        if self._follower is not None:
            await asyncio.wait([self._follower])

    def _finished(self, job_id: str, task: asyncio.Task[Any], work: Awaitable[Any]) -> None:
        if inspect.iscoroutine(work) and inspect.getcoroutinestate(work) == "CORO_CREATED":
            work.close()  # cancelled while queued: the job never started
        if job_id in self._holding:
            self._hand_on(job_id)
        else:
            for queue in self._queued.values():
                for entry in [entry for entry in queue if entry[0] == job_id]:
                    queue.remove(entry)
        self._follow_progress()
        self._tasks.pop(job_id, None)
        self._callers.pop(job_id, None)
        info = self._jobs[job_id]
        now = time.time()
        if task.cancelled():
            info = replace(info, status="cancelled", finished_at=now)
        elif (error := task.exception()) is not None:
            info = replace(
                info,
                status="failed",
                finished_at=now,
                error=redact(f"{type(error).__name__}: {error}"),
            )
        else:
            info = replace(info, status="completed", finished_at=now, result=task.result())
        self._jobs[job_id] = info
        self._forget_old()

    def _forget_old(self) -> None:
        finished = [
            job_id
            for job_id, info in self._jobs.items()
            if info.status not in ("queued", "running")
        ]
        for job_id in finished[: max(0, len(finished) - self.history)]:
            del self._jobs[job_id]

    def _follow_progress(self) -> None:
        if self._progress is None:
            return
        for event in self._progress.drain():
            self._apply(event)

    def _apply(self, event: Event) -> None:
        if not isinstance(event, JobEvent):
            return
        info = self._jobs.get(event.job_id)
        if info is not None:
            issues = info.issues
            if event.issue and len(issues) < MAX_ISSUES:
                issues = (*issues, event.issue)
            self._jobs[info.id] = replace(
                info, done=event.done, total=event.total, detail=event.detail, issues=issues
            )

    def __repr__(self) -> str:
        return f"<JobManager unfinished={len(self._tasks)} remembered={len(self._jobs)}>"
