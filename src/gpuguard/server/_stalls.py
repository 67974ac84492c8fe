"""A reader that takes nothing loses its answer: every write of an answer is bounded in time.

A streamed chat holds the GPU until its last byte is written. A client that stops reading
(its window full, the server's buffer full) used to keep the GPU for ``chat_hold_timeout_s``
and could ask again. :class:`StalledReaders` bounds each write of any answer by
``stalled_s``; a write that cannot finish raises :class:`ReaderStalled` inside the app, where
:class:`~._streaming.ClosingStreamingResponse` stops the work first (the GPU is freed when it
has really stopped) and then ends the stream with an error frame, which the reader sees if it
comes back within another ``stalled_s``. The same bound drops an ``/events`` subscriber that
does not read. What is still unwritten after that is the connection's to drop
(:mod:`._connections`).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ReaderStalled", "StalledReaders"]

logger = logging.getLogger("gpuguard.server")


class ReaderStalled(Exception):
    """The client took nothing of its answer for ``stalled_s`` seconds."""


class StalledReaders:
    """An ASGI middleware bounding each ``send`` of an answer by ``stalled_s`` seconds."""

    def __init__(self, app: ASGIApp, *, stalled_s: float) -> None:
        self.app = app
        self.stalled_s = stalled_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a bounded ``send``; a stall the app did not handle ends here."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def bounded(message: Message) -> None:
            try:
                async with asyncio.timeout(self.stalled_s):
                    await send(message)
            except TimeoutError:
                raise ReaderStalled(
                    f"the client read nothing for {self.stalled_s:g} s: the answer was ended"
                ) from None

        try:
            await self.app(scope, receive, bounded)
        except BaseException as exc:
            if not _is_stall(exc):
                raise
            logger.warning("answer to %s ended: its reader took nothing", scope.get("path"))


def _is_stall(exc: BaseException) -> bool:
    if isinstance(exc, ReaderStalled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_stall(inner) for inner in exc.exceptions)
    return False
