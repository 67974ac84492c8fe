"""``process_rag_documents``: index files and folders for retrieval, then re-warm the LLM."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .._events import EventBus
from .._exceptions import ConfigError, DocumentError
from .._redact import redact
from ..embed import BulkEmbedder
from ..index import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CHARS,
    Chunk,
    SourcePolicy,
    TextExtractor,
    VectorStore,
    chunk_text,
    content_hash,
    read_document,
    survey_documents,
)
from ._indexing import PendingSource, embed_and_store
from ._progress import IndexResult, JobIssue, JobReporter

__all__ = ["process_rag_documents"]

JOB_NAME = "rag-indexing"


async def process_rag_documents(
    paths: Iterable[str | Path],
    *,
    store: VectorStore,
    bulk: BulkEmbedder,
    events: EventBus | None = None,
    rewarm: Callable[[], Awaitable[None]] | None = None,
    job_id: str | None = None,
    chunk_size: int = 1000,
    chunk_overlap: int = 200,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_chars_per_file: int = DEFAULT_MAX_CHARS,
    max_chars_per_job: int | None = None,
    policy: SourcePolicy | None = None,
    extract_timeout_s: float | None = 30.0,
) -> IndexResult:
    """Index the supported documents in ``paths`` (files or folders, searched recursively).

    Idempotent: a file whose bytes (and the chunking settings and model) are unchanged is
    skipped; a changed file's chunks are replaced in one transaction; files that were
    indexed under a given folder (or as a given file) and are gone now are removed. Every
    file left out is named in ``errors`` with why: unsupported, hidden, not a regular file,
    outside ``policy``'s roots (symlinks resolved), unreadable, empty, binary or corrupt
    (its previous chunks, if any, stay), or cut at ``max_chars_per_file`` characters or at
    the job's ``max_chars_per_job``, or whose text took longer than ``extract_timeout_s`` to
    extract (PDF, HTML and DOCX are parsed in a child process that is killed then, and when
    the job is cancelled: :class:`~gpuguard.index.TextExtractor`). When anything was
    embedded, ``rewarm`` (the gateway's LLM re-warm) is awaited at the end; its failure is
    reported, not raised.
    """
    if chunk_size < 1 or not 0 <= chunk_overlap < chunk_size:
        raise ConfigError("need chunk_size >= 1 and 0 <= chunk_overlap < chunk_size")
    if max_chars_per_file < 1 or (max_chars_per_job is not None and max_chars_per_job < 1):
        raise ConfigError("the text limits must be >= 1")
    started = time.perf_counter()
    reporter = JobReporter(events, JOB_NAME, job_id)
    given = list(paths)
    errors: list[JobIssue] = []
    with reporter.lifecycle(f"indexing {len(given)} path(s)"):
        files, stored = await asyncio.to_thread(_survey, given, store, errors, policy)
        reporter.total = len(files)
        gone = sorted(stored.keys() - {str(path) for path in files})
        removed = await asyncio.to_thread(store.remove_sources, "document", gone)
        if removed:
            reporter.publish("progress", f"{removed} deleted file(s) removed")
        chunking = _Chunking(chunk_size, chunk_overlap, bulk.name, max_bytes, max_chars_per_file)
        budget = _TextBudget(max_chars_per_job)
        reading = _Reading(policy, TextExtractor(timeout_s=extract_timeout_s), reporter)
        embedded: list[str] = []
        unchanged: list[str] = []

        async def pending() -> AsyncIterator[PendingSource]:
            for path in files:
                if budget.spent:
                    errors.append(JobIssue(str(path), budget.refusal()))
                    reporter.advance(f"skipped {path}: {budget.refusal()}")
                    continue
                try:
                    source = await _prepare(
                        path, stored.get(str(path)), chunking, budget, errors, reading
                    )
                except DocumentError as exc:
                    issue = JobIssue(str(path), str(exc))
                    errors.append(issue)
                    reporter.advance(f"skipped {path}: {exc}", issue=issue)
                    continue
                if source is None:
                    unchanged.append(str(path))
                    reporter.advance(f"{path} unchanged")
                    continue
                yield source

        def stored_one(source: PendingSource) -> None:
            embedded.append(source.name)
            reporter.advance(f"{source.name} indexed")

        async with reading.extractor:
            stats = await embed_and_store(
                pending(), store=store, bulk=bulk, operation=JOB_NAME, on_stored=stored_one
            )
        if rewarm is not None and stats.texts:
            reporter.publish("progress", "re-warming the LLM")
            try:
                await rewarm()
            except Exception as exc:
                issue = JobIssue("rewarm", redact(f"re-warming the LLM failed: {exc}"))
                errors.append(issue)
                reporter.publish("progress", issue.message, issue=issue.line())
        result = IndexResult(
            embedded=len(embedded),
            skipped=len(unchanged),
            removed=removed,
            texts=stats.texts,
            gpu_batches=stats.gpu_batches,
            cpu_batches=stats.cpu_batches,
            fallback_batches=stats.fallback_batches,
            seconds=time.perf_counter() - started,
            errors=tuple(errors),
            embedded_sources=tuple(embedded),
            unchanged_sources=tuple(unchanged),
            removed_sources=tuple(gone),
        )
        reporter.publish("completed", result.summary())
    return result


def _survey(
    paths: list[str | Path],
    store: VectorStore,
    errors: list[JobIssue],
    policy: SourcePolicy | None,
) -> tuple[list[Path], dict[str, str]]:
    """The files to index, and the stored hashes of every document under the paths."""
    files: dict[Path, None] = {}
    stored: dict[str, str] = {}
    for given in paths:
        root = policy.check_path(given) if policy is not None else Path(given).absolute()
        hashes = store.source_hashes("document", prefix=str(root))
        known = {name: digest for name, digest in hashes.items() if _under(name, root)}
        stored |= known
        if root.exists():
            survey = survey_documents(root, policy=policy)
            files.update(dict.fromkeys(survey.files))
            errors.extend(JobIssue(str(path), f"{path}: {why}") for path, why in survey.skipped)
        elif not known:
            errors.append(JobIssue(str(root), f"{root}: no such file or directory"))
    return list(files), stored


def _under(name: str, root: Path) -> bool:
    return name == str(root) or name.startswith(f"{root}{os.sep}")


@dataclass(frozen=True, slots=True)
class _Chunking:
    """Everything besides a file's bytes that decides its chunks and vectors."""

    size: int
    overlap: int
    model: str
    max_bytes: int
    max_chars: int


class _TextBudget:
    """The characters of text a job may still extract (``None``: no job-wide limit)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.left = limit

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0

    def refusal(self) -> str:
        return f"not read: the job reached its limit of {self.limit} characters of text"

    def allowance(self, per_file: int) -> int:
        return per_file if self.left is None else min(per_file, self.left)

    def spend(self, chars: int) -> None:
        if self.left is not None:
            self.left -= chars


async def _prepare(
    path: Path,
    stored_hash: str | None,
    chunking: _Chunking,
    budget: _TextBudget,
    errors: list[JobIssue],
    reading: _Reading,
) -> PendingSource | None:
    """The file's chunks, or ``None`` when the stored ones are up to date."""
    data, digest = await asyncio.to_thread(_read, path, chunking, reading.policy)
    if digest == stored_hash:
        return None
    allowance = budget.allowance(chunking.max_chars)
    text = await reading.extractor.extract(
        path,
        data,
        max_chars=allowance,
        on_sent=lambda: reading.reporter.publish("progress", f"extracting the text of {path}"),
    )
    budget.spend(len(text))
    if len(text) >= allowance:
        limit = "file" if allowance == chunking.max_chars else "job"
        errors.append(
            JobIssue(
                str(path),
                f"{path}: only the first {allowance} characters were indexed "
                f"(the {limit} limit on extracted text)",
            )
        )
    chunks = await asyncio.to_thread(_chunks, path, text, chunking)
    return PendingSource("document", str(path), digest, chunks)


def _chunks(path: Path, text: str, chunking: _Chunking) -> list[Chunk]:
    return [
        Chunk(piece.text, {"path": str(path), "start": piece.start, "end": piece.end})
        for piece in chunk_text(text, size=chunking.size, overlap=chunking.overlap)
    ]


def _read(path: Path, chunking: _Chunking, policy: SourcePolicy | None) -> tuple[bytes, str]:
    data = read_document(path, max_bytes=chunking.max_bytes, policy=policy)
    digest = content_hash(data, chunking.size, chunking.overlap, chunking.model, chunking.max_chars)
    return data, digest


@dataclass(frozen=True, slots=True)
class _Reading:
    """How a job reads its files: under which policy, extracting text where, told to whom."""

    policy: SourcePolicy | None
    extractor: TextExtractor
    reporter: JobReporter
