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
import contextlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import ErrorKind, error_body
from ._limits import send_json_and_close

__all__ = ["ReaderStalled", "StalledReaders"]

logger = logging.getLogger("gpuguard.server")

_SLOW_BODY = ErrorKind(408, "invalid_request_error", "request_timeout")


class ReaderStalled(Exception):
    """The client took nothing of its answer for ``stalled_s`` seconds."""


class StalledReaders:
    """An ASGI middleware bounding each ``send`` of an answer by ``stalled_s`` seconds.

    The request body is bounded the same way: a client that stops sending the body it
    announced (a slow-body attack) gets ``408`` once nothing came for ``stalled_s``.
    """

    def __init__(self, app: ASGIApp, *, stalled_s: float) -> None:
        self.app = app
        self.stalled_s = stalled_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a bounded ``send`` and body ``receive``; end a stall here."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        body_done = False
        body_stalled = ""  # why the body stopped; the app's answer to it is replaced by a 408

        async def bounded(message: Message) -> None:
            nonlocal started
            if body_stalled:
                if not started and message["type"] == "http.response.start":
                    started = True
                    await _request_timeout(send, body_stalled)
                return
            started = started or message["type"] == "http.response.start"
            try:
                async with asyncio.timeout(self.stalled_s):
                    await send(message)
            except TimeoutError:
                raise ReaderStalled(
                    f"the client read nothing for {self.stalled_s:g} s: the answer was ended"
                ) from None

        async def bounded_receive() -> Message:
            nonlocal body_done, body_stalled
            if body_done:
                return await receive()  # after the body: waiting for a disconnect is normal
            try:
                async with asyncio.timeout(self.stalled_s):
                    message = await receive()
            except TimeoutError:
                # The app may turn this into an answer of its own ("cannot parse the body"):
                # whatever it answers, the client gets the 408 that says what happened.
                body_stalled = (
                    f"the client sent nothing of its request body for {self.stalled_s:g} s"
                )
                raise ReaderStalled(body_stalled) from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        try:
            await self.app(scope, bounded_receive, bounded)
        except BaseException as exc:
            if not _is_stall(exc):
                raise
            logger.warning("request to %s ended: its client stalled", scope.get("path"))
            if not started:
                await _request_timeout(send, str(_first_stall(exc)))


async def _request_timeout(send: Send, message: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await send_json_and_close(send, 408, error_body(_SLOW_BODY, message, context=None))


def _first_stall(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _is_stall(exc: BaseException) -> bool:
    if isinstance(exc, ReaderStalled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_stall(inner) for inner in exc.exceptions)
    return False
