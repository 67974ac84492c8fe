"""Bound request bodies: an ASGI middleware that answers 413 before a large body is read."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import ErrorKind, error_body, is_ollama_path

__all__ = ["BodySizeLimit"]

_TOO_LARGE = ErrorKind(413, "invalid_request_error", "request_too_large")


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
            await self._reject(send, ollama=is_ollama_path(scope["path"]))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"request body larger than the limit of {self.max_bytes} bytes"

    async def _reject(self, send: Send, *, ollama: bool) -> None:
        message = self._message()
        shaped = {"error": message} if ollama else error_body(_TOO_LARGE, message, context=None)
        body = json.dumps(shaped).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
