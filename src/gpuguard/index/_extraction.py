"""Text extraction in a child process that a time limit or a cancel really stops.

A PDF, HTML or DOCX parser is handed a caller's bytes, and a small file can make it work
for minutes without yielding text (a 133 KB PDF whose pages re-run one huge content
stream): a bound on the text never trips, and a thread stuck in a parser cannot be
stopped. So :class:`TextExtractor` sends each such document to one child process (a fresh
interpreter, "spawn", started on first use and kept for the job): past ``timeout_s`` per
file, or when the job is cancelled, the child is killed, and the work has really stopped
when the call returns. The next document starts a new child. Plain text is decoded in a
worker thread: it cannot run away.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from .._exceptions import DocumentError
from .documents import extract_text

__all__ = ["ISOLATED_SUFFIXES", "TextExtractor"]

ISOLATED_SUFFIXES = frozenset({".pdf", ".html", ".htm", ".docx"})
"""Formats whose text is extracted in the child process."""

_Answer = tuple[str, str]


class TextExtractor:
    """:func:`~gpuguard.index.extract_text`, stoppable; use it as an async context manager.

    ``timeout_s`` bounds each isolated document (``None``: no limit); leaving the context
    (or :meth:`aclose`) ends the child. One extraction at a time.
    """

    def __init__(self, *, timeout_s: float | None = 30.0) -> None:
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError("timeout_s must be > 0 or None")
        self.timeout_s = timeout_s
        self._child: Any = None
        self._connection: Connection | None = None

    async def extract(
        self,
        path: Path,
        data: bytes,
        *,
        max_chars: int,
        on_sent: Callable[[], None] | None = None,
    ) -> str:
        """The text of ``data`` (the bytes of ``path``), as :func:`extract_text` gives it.

        ``on_sent`` is called once the child has the document (it is working on it now).
        Raises :class:`DocumentError` as :func:`extract_text` does, and when the isolated
        extraction took longer than ``timeout_s`` or its child died.
        """
        if path.suffix.lower() not in ISOLATED_SUFFIXES:
            return await asyncio.to_thread(extract_text, path, data, max_chars=max_chars)
        connection = await self._started()
        await asyncio.to_thread(connection.send, (str(path), data, max_chars))
        if on_sent is not None:
            on_sent()
        receiving = asyncio.ensure_future(asyncio.to_thread(_receive, connection))
        try:
            status, value = await asyncio.wait_for(asyncio.shield(receiving), self.timeout_s)
        except TimeoutError:
            await self._stop(receiving)
            raise DocumentError(
                f"{path}: extracting its text took longer than {self.timeout_s:g}s; stopped",
                path=str(path),
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(receiving))
            raise
        if status == "ok":
            return value
        if status == "died":
            await self._stop(receiving)
        raise DocumentError(value, path=str(path))

    async def aclose(self) -> None:
        """End the child process, if one is running."""
        await self._stop(None)

    async def __aenter__(self) -> TextExtractor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.aclose())

    async def _started(self) -> Connection:
        if self._connection is None:
            context = multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe(duplex=True)
            child = context.Process(
                target=_child_main, args=(theirs,), name="gpuguard-text-extractor", daemon=True
            )
            await asyncio.to_thread(child.start)
            theirs.close()  # the child holds the only other end: its death is our end of file
            self._child, self._connection = child, ours
        return self._connection

    async def _stop(self, receiving: asyncio.Future[_Answer] | None) -> None:
        """Kill the child, wait until it is gone and the receiving thread has seen it."""
        child, connection = self._child, self._connection
        self._child = self._connection = None
        if child is None or connection is None:
            return
        child.kill()  # a no-op once it has exited
        await asyncio.to_thread(child.join)
        if receiving is not None:
            await asyncio.wait([receiving])
        connection.close()

    def __repr__(self) -> str:
        state = "idle" if self._child is None else f"child pid={self._child.pid}"
        return f"<TextExtractor {state} timeout_s={self.timeout_s}>"


def _receive(connection: Connection) -> _Answer:
    try:
        answer: _Answer = connection.recv()
    except (EOFError, OSError):
        return ("died", "the text extractor stopped without an answer")
    return answer


def _child_main(connection: Connection) -> None:
    """Extract documents until the parent closes its end."""
    while True:
        try:
            path, data, max_chars = connection.recv()
        except (EOFError, OSError):
            return
        answer: _Answer
        try:
            answer = ("ok", extract_text(Path(path), data, max_chars=max_chars))
        except DocumentError as exc:
            answer = ("error", str(exc))
        except Exception as exc:  # anything else still has to reach the parent as an answer
            answer = ("error", f"{path}: cannot extract its text ({type(exc).__name__})")
        connection.send(answer)
