"""Bound request bodies: an ASGI middleware that answers 413 instead of reading a large body.

A client that sends the whole body before reading the answer (``requests``, curl without
``Expect: 100-continue``) only sees the 413 if the server reads what is still on its way:
closing a connection with unread data makes the kernel reset it, and the answer is lost with
it ("Connection broken: IncompleteRead"). So the rest of a body up to
:data:`DRAIN_FACTOR` times the limit is read and dropped (for at most :data:`DRAIN_S`) before
the 413 is sent; a larger one is refused at once, as it was announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Final

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import ErrorKind, error_body, is_ollama_path

__all__ = ["BodySizeLimit", "send_json_and_close"]

_TOO_LARGE = ErrorKind(413, "invalid_request_error", "request_too_large")

DRAIN_FACTOR: Final = 16
"""Bodies up to this many times the limit are read and dropped so the client gets its 413."""

DRAIN_S: Final = 5.0
"""The longest the middleware reads a refused body before it answers anyway."""


class BodySizeLimit:
    """Reject bodies over ``max_bytes``: by ``Content-Length`` at once, else while reading.

    A chunked body that grows past the limit makes ``receive`` raise a 413
    :class:`HTTPException`, which FastAPI hands to the app's error handler.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the bytes actually received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            if declared.isdigit() and int(declared) <= self.max_bytes * DRAIN_FACTOR:
                await self._drain(receive, more=True)
            await self._reject(send, ollama=is_ollama_path(scope["path"]))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    await self._drain(receive, more=message.get("more_body", False))
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)

    async def _drain(self, receive: Receive, *, more: bool) -> None:
        """Read and drop the rest of a refused body (bounded in bytes and time)."""
        left = self.max_bytes * DRAIN_FACTOR
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                while more and left > 0:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    left -= len(message.get("body", b""))
                    more = message.get("more_body", False)

    def _message(self) -> str:
        return f"request body larger than the limit of {self.max_bytes} bytes"

    async def _reject(self, send: Send, *, ollama: bool) -> None:
        message = self._message()
        shaped = {"error": message} if ollama else error_body(_TOO_LARGE, message, context=None)
        await send_json_and_close(send, 413, shaped)


async def send_json_and_close(send: Send, status: int, payload: object) -> None:
    """Answer from an ASGI middleware: ``payload`` as JSON with ``status``, then close."""
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
