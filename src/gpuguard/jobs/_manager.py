"""Running long jobs in the background: start, list with progress, get, wait, cancel.

At most ``max_running`` jobs of one kind run at once; later ones wait, ``queued``, in the
order they were started. Progress events are read from the bus as they arrive (a follower
task), so a job nobody polls never fills its subscription.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from .._events import Event, EventBus, JobEvent, Subscription
from .._exceptions import JobError, JobNotFound
from .._redact import redact
from ._progress import new_job_id

__all__ = ["JobInfo", "JobManager", "JobStatus"]

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one job: what, its state, its latest progress and its outcome.

    ``done``/``total``/``detail`` mirror the job's latest :class:`~gpuguard.JobEvent`;
    ``result`` is what the job returned (when completed), ``error`` why it failed.
    """

    id: str
    kind: str
    status: JobStatus
    started_at: float
    finished_at: float | None = None
    done: int = 0
    total: int | None = None
    detail: str = ""
    error: str | None = None
    result: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the result through its own ``to_dict`` when it has one)."""
        result = self.result
        if hasattr(result, "to_dict"):
            result = result.to_dict()
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "done": self.done,
            "total": self.total,
            "detail": self.detail,
            "error": self.error,
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
    ) -> None:
        if history < 0:
            raise ValueError("history must be >= 0")
        if max_running is not None and max_running < 1:
            raise ValueError("max_running must be >= 1 or None")
        self.events = events
        self.history = history
        self.max_running = max_running
        self._jobs: dict[str, JobInfo] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._progress: Subscription | None = (
            None if events is None else events.subscribe(kinds={"job"})
        )
        self._follower: asyncio.Task[None] | None = None

    def start(self, kind: str, coro_factory: Callable[[str], Awaitable[Any]]) -> JobInfo:
        """Start ``coro_factory(job_id)`` as a background task; returns its first snapshot.

        Must be called with an event loop running. ``kind`` names the job for listings.
        """
        job_id = new_job_id()
        try:
            work = coro_factory(job_id)
        except Exception as exc:
            raise JobError(f"cannot start a {kind} job: {exc}") from exc
        slot = self._slot(kind)
        status: JobStatus = "queued" if slot is not None and slot.locked() else "running"
        self._jobs[job_id] = JobInfo(id=job_id, kind=kind, status=status, started_at=time.time())
        task = asyncio.ensure_future(self._run(job_id, slot, work))
        self._tasks[job_id] = task
        task.add_done_callback(lambda finished: self._finished(job_id, finished))
        self._follow()
        return self._jobs[job_id]

    def _slot(self, kind: str) -> asyncio.Semaphore | None:
        if self.max_running is None:
            return None
        return self._slots.setdefault(kind, asyncio.Semaphore(self.max_running))

    async def _run(self, job_id: str, slot: asyncio.Semaphore | None, work: Awaitable[Any]) -> Any:
        if slot is None:
            return await work
        try:
            async with slot:
                info = self._jobs[job_id]
                if info.status == "queued":
                    self._jobs[job_id] = replace(info, status="running")
                return await work
        finally:
            if inspect.iscoroutine(work) and inspect.getcoroutinestate(work) == "CORO_CREATED":
                work.close()  # cancelled while queued: the job never started

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

    def _finished(self, job_id: str, task: asyncio.Task[Any]) -> None:
        self._follow_progress()
        self._tasks.pop(job_id, None)
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
            self._jobs[info.id] = replace(
                info, done=event.done, total=event.total, detail=event.detail
            )

    def __repr__(self) -> str:
        return f"<JobManager unfinished={len(self._tasks)} remembered={len(self._jobs)}>"
