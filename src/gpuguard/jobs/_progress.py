"""Job results and progress reporting as :class:`~gpuguard.JobEvent` s."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from .._events import EventBus, JobEvent
from .._redact import redact

__all__ = ["MAX_NAMED", "IndexResult", "JobIssue", "JobReporter", "new_job_id"]

MAX_NAMED = 100
"""How many sources an :class:`IndexResult` names in each list (the counts count them all)."""


def new_job_id() -> str:
    """A short random job id."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True)
class JobIssue:
    """Something a job skipped and why (a corrupt file, a failed re-warm)."""

    source: str
    message: str

    def line(self) -> str:
        """``"source: message"`` (just the message when it names the source already)."""
        return self.message if self.source in self.message else f"{self.source}: {self.message}"


@dataclass(frozen=True, slots=True)
class IndexResult:
    """What an indexing job did.

    ``embedded``, ``skipped`` (unchanged) and ``removed`` count sources (tables or files)
    and the ``*_sources`` fields name the first :data:`MAX_NAMED` of them; ``error_count``
    counts the sources skipped and ``errors`` names the first :data:`MAX_NAMED` with why
    (unsupported, unreadable, refused, cut at a size limit); ``schemas`` the database
    schemas read. ``texts`` counts the texts embedded; the batch counts say where they ran.
    A job over 40,000 files keeps a result of the same size as one over 200.
    """

    embedded: int
    skipped: int
    removed: int
    texts: int
    gpu_batches: int
    cpu_batches: int
    fallback_batches: int
    seconds: float
    errors: tuple[JobIssue, ...] = ()
    schemas: tuple[str, ...] = ()
    embedded_sources: tuple[str, ...] = ()
    unchanged_sources: tuple[str, ...] = ()
    removed_sources: tuple[str, ...] = ()
    error_count: int = 0

    def __post_init__(self) -> None:
        # The one place every job's result is bounded: counts stay whole, names are cut.
        object.__setattr__(self, "error_count", max(self.error_count, len(self.errors)))
        for name in _NAMED_FIELDS:
            object.__setattr__(self, name, tuple(getattr(self, name)[:MAX_NAMED]))

    def summary(self) -> str:
        """One line for logs and the final event."""
        return (
            f"{self.embedded} embedded, {self.skipped} unchanged, {self.removed} removed, "
            f"{self.error_count} error(s); {self.texts} texts in {self.gpu_batches} GPU and "
            f"{self.cpu_batches} CPU batches ({self.fallback_batches} fallbacks) "
            f"in {self.seconds:.1f}s"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


_NAMED_FIELDS = ("errors", "schemas", "embedded_sources", "unchanged_sources", "removed_sources")


class JobReporter:
    """Publishes one job's lifecycle and progress to an event bus (if any).

    ``done``/``total`` count the job's units (tables, files).
    """

    def __init__(self, events: EventBus | None, job: str, job_id: str | None) -> None:
        self.events = events
        self.job = job
        self.job_id = job_id or new_job_id()
        self.done = 0
        self.total: int | None = None

    def publish(self, status: str, detail: str = "", *, issue: str = "") -> None:
        """Publish the current progress with ``status`` (and a skipped source's ``issue``)."""
        if self.events is not None:
            self.events.publish(
                JobEvent(
                    job_id=self.job_id,
                    job=self.job,
                    status=status,
                    timestamp=time.time(),
                    done=self.done,
                    total=self.total,
                    detail=redact(detail),
                    issue=redact(issue),
                )
            )

    def advance(self, detail: str, units: int = 1, *, issue: JobIssue | None = None) -> None:
        """Count ``units`` more done and publish a ``progress`` event (with a skipped ``issue``)."""
        self.done += units
        self.publish("progress", detail, issue="" if issue is None else issue.line())

    @contextmanager
    def lifecycle(self, detail: str) -> Iterator[None]:
        """Publish ``started``, then ``failed`` or ``cancelled`` if the body raises."""
        self.publish("started", detail)
        try:
            yield
        except asyncio.CancelledError:
            self.publish("cancelled", "cancelled")
            raise
        except Exception as exc:
            self.publish("failed", f"{type(exc).__name__}: {exc}")
            raise
