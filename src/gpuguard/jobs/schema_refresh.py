"""``refresh_database_schemas``: keep the index of a database's schema up to date."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

from .._events import EventBus
from .._exceptions import SourceUnavailable
from .._redact import operator_only
from ..embed import BulkEmbedder
from ..index import (
    Chunk,
    DatabaseTimeouts,
    SourcePolicy,
    TableDescription,
    VectorStore,
    content_hash,
    database_label,
    describe_database_isolated,
    resolve_source,
)
from ._indexing import PendingSource, embed_and_store
from ._progress import IndexResult, JobReporter

__all__ = ["refresh_database_schemas"]

JOB_NAME = "schema-refresh"

logger = logging.getLogger("gpuguard.jobs")


async def refresh_database_schemas(
    url: str,
    *,
    store: VectorStore,
    bulk: BulkEmbedder,
    events: EventBus | None = None,
    schemas: Sequence[str] | None = None,
    job_id: str | None = None,
    policy: SourcePolicy | None = None,
    timeouts: DatabaseTimeouts | None = None,
) -> IndexResult:
    """Introspect the database at ``url`` and bring its entries in ``store`` up to date.

    Each table and view of ``schemas`` (default: every non-system schema) becomes one text
    for itself and one per column. Only tables whose definition changed (or that are new)
    are re-embedded; tables that disappeared are removed from the index. The schema is read
    first, in a child process bounded by ``timeouts`` (killed when the job is cancelled), so
    a bad, refused (by ``policy``; ``None`` trusts the URL) or unreachable database raises
    :class:`~gpuguard.SourceUnavailable` and leaves the previous index intact. Publishes
    :class:`~gpuguard.JobEvent` s counting tables; the result names every table.
    """
    started = time.perf_counter()
    reporter = JobReporter(events, JOB_NAME, job_id)
    with reporter.lifecycle(f"reading the schema of {_safe_label(url)}"):
        try:
            source = await asyncio.to_thread(resolve_source, url, policy)
            description = await describe_database_isolated(
                source,
                schemas=schemas,
                timeouts=timeouts or DatabaseTimeouts(),
                url_only=policy is not None and url not in policy.databases,
            )
        except SourceUnavailable as exc:
            if exc.detail:  # the driver's words: for the operator's log, not for callers
                logger.warning(
                    "schema refresh: %s (%s)", exc, exc.detail, extra=operator_only(str(exc))
                )
            raise
        prefix = f"{description.label}#"
        stored = await asyncio.to_thread(store.source_hashes, "schema", prefix=prefix)
        tables = {f"{prefix}{table.qualified_name}": table for table in description.tables}
        hashes = {
            name: content_hash(table.definition_hash.encode(), bulk.name)
            for name, table in tables.items()
        }
        changed = [name for name in tables if stored.get(name) != hashes[name]]
        unchanged = len(tables) - len(changed)
        dropped = sorted(stored.keys() - tables.keys())
        reporter.total = len(tables) + len(dropped)
        reporter.advance(f"{unchanged} table(s) unchanged", unchanged)

        removed = await asyncio.to_thread(store.remove_sources, "schema", dropped)
        reporter.advance(f"{removed} dropped table(s) removed", len(dropped))

        async def pending() -> AsyncIterator[PendingSource]:
            for name in changed:
                yield PendingSource("schema", name, hashes[name], _table_chunks(tables[name]))

        stats = await embed_and_store(
            pending(),
            store=store,
            bulk=bulk,
            operation=JOB_NAME,
            on_stored=lambda source: reporter.advance(f"{source.name} embedded"),
        )
        result = IndexResult(
            embedded=len(changed),
            skipped=unchanged,
            removed=removed,
            texts=stats.texts,
            gpu_batches=stats.gpu_batches,
            cpu_batches=stats.cpu_batches,
            fallback_batches=stats.fallback_batches,
            seconds=time.perf_counter() - started,
            schemas=description.schemas,
            embedded_sources=tuple(changed),
            unchanged_sources=tuple(name for name in tables if name not in set(changed)),
            removed_sources=tuple(dropped),
        )
        reporter.publish("completed", result.summary())
    return result


def _table_chunks(table: TableDescription) -> list[Chunk]:
    database_object = {"schema": table.schema, "table": table.name, "type": table.kind}
    chunks = [Chunk(table.table_text(), database_object)]
    chunks += [
        Chunk(text, {**database_object, "column": column}) for column, text in table.column_texts()
    ]
    return chunks


def _safe_label(url: str) -> str:
    """The database's label for the first event; the URL's own error comes right after."""
    if "://" not in url:
        return repr(url)  # the name of a configured source
    try:
        return database_label(url)
    except SourceUnavailable:
        return "an unparseable URL"
