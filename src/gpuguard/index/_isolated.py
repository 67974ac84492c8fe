"""Read a database's schema in a child process that can be killed.

A database across the network can stop answering anywhere: in the handshake, in the middle
of a statement. Driver timeouts bound most of that, not all of it (libpq has no read
timeout), and a thread stuck in a driver cannot be stopped. So the introspection runs in a
child process: cancelling the job, or passing ``timeouts.total_s``, kills the child, and the
work has really stopped when :func:`describe_database_isolated` returns. Each child is a
fresh interpreter ("spawn": safe beside the server's threads, with the parent's import path),
which imports only SQLAlchemy, the driver and gpuguard's light modules: well under a second.
A local SQLite file is read in a worker thread instead: it cannot stall on a network.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from .._exceptions import SourceUnavailable
from ._connect import DatabaseTimeouts, parse_url, without_ambient_environment
from .schema import DatabaseDescription, database_label, describe_database

__all__ = ["describe_database_isolated"]

_Outcome = tuple[str, Any, Any]


async def describe_database_isolated(
    url: str,
    *,
    schemas: Sequence[str] | None,
    timeouts: DatabaseTimeouts,
    url_only: bool = False,
) -> DatabaseDescription:
    """:func:`describe_database`, stoppable: in a child process for a network database.

    ``url_only`` (for a caller's URL): the child connects with what the URL says and
    nothing else: its environment holds no ``PG*``, ``MYSQL*`` or ``KRB5*`` variable.

    Raises :class:`SourceUnavailable` when the database fails, or when reading took longer
    than ``timeouts.total_s`` (the child is killed); cancelling kills the child too.
    """
    if parse_url(url).get_backend_name() == "sqlite":
        return await asyncio.wait_for(
            asyncio.to_thread(
                describe_database, url, schemas=schemas, timeouts=timeouts, url_only=url_only
            ),
            timeouts.total_s,
        )
    label = database_label(url)
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main,
        args=(writer, url, list(schemas) if schemas else None, timeouts, url_only),
        name="gpuguard-schema-reader",
        daemon=True,
    )
    await asyncio.to_thread(child.start)
    writer.close()  # the child holds the only writer: its death is our end of file
    receiving = asyncio.ensure_future(asyncio.to_thread(_receive, reader))
    try:
        outcome = await asyncio.wait_for(asyncio.shield(receiving), timeouts.total_s)
    except TimeoutError:
        raise SourceUnavailable(
            f"reading the schema of {label} took longer than {timeouts.total_s:g}s; stopped",
            source=label,
        ) from None
    finally:
        child.kill()  # a no-op once it has exited
        await asyncio.shield(_reap(child, receiving, reader))
    status, value, detail = outcome
    if status == "ok":
        assert isinstance(value, DatabaseDescription)
        return value
    raise SourceUnavailable(str(value), source=label, detail=detail)


def _child_main(
    writer: Connection,
    url: str,
    schemas: list[str] | None,
    timeouts: DatabaseTimeouts,
    url_only: bool,
) -> None:
    outcome: _Outcome
    if url_only:
        without_ambient_environment()
    try:
        description = describe_database(url, schemas=schemas, timeouts=timeouts, url_only=url_only)
        outcome = ("ok", description, None)
    except SourceUnavailable as exc:
        outcome = ("error", str(exc), exc.detail)
    except Exception as exc:  # anything else still has to reach the parent as an answer
        outcome = ("error", f"reading the schema failed ({type(exc).__name__})", str(exc))
    writer.send(outcome)
    writer.close()


def _receive(reader: Connection) -> _Outcome:
    try:
        outcome: _Outcome = reader.recv()
    except (EOFError, OSError):
        return ("error", "the schema reader stopped without an answer", None)
    return outcome


async def _reap(child: Any, receiving: asyncio.Future[_Outcome], reader: Connection) -> None:
    """Wait until the child is gone and the receiving thread has seen it, then close."""
    await asyncio.to_thread(child.join)
    await asyncio.wait([receiving])
    reader.close()
