r"""Text the server can always write out: no lone UTF-16 surrogate gets in, none breaks a reply.

JSON may spell a lone surrogate (``"a\ud800b"``). Python decodes it into a ``str`` that no
UTF-8 encoder accepts, so it would fail far from where it came in: in a JSON response, in the
request to the LLM server, in the index. :class:`ValidTextBodies` replaces each lone
surrogate of a JSON request body with U+FFFD before any route sees it, as a UTF-8 decoder
with ``errors="replace"`` does for bytes. :class:`JsonResponse` is the app's response class:
text that still carries one (a file name that is not UTF-8, decoded with
``surrogateescape``) goes out escaped instead of failing the response.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["JsonResponse", "ValidTextBodies", "without_lone_surrogates"]

# Cheap first look at the raw bytes: only a body with a surrogate escape can need a fix.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonResponse(JSONResponse):
    """Starlette's JSON response that never fails on text: UTF-8, else ASCII with escapes."""

    def render(self, content: Any) -> bytes:
        r"""Compact UTF-8 JSON; ``\uXXXX`` escapes when the text cannot be UTF-8."""
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


class ValidTextBodies:
    """ASGI middleware: a JSON request body reaches the app with every lone surrogate replaced.

    The body is gathered while the app reads it (inside the app's own ``receive`` calls, so
    limits enforced further out still answer through the app's error handlers), and handed
    over as one message. Bodies that are not JSON, or cannot be parsed, pass unchanged: the
    app reports those itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap ``receive`` for JSON requests; pass everything else straight through."""
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        delivered = False

        async def whole_body() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            delivered = True
            return {"type": "http.request", "body": _valid_body(b"".join(chunks))}

        await self.app(scope, whole_body, send)


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone UTF-16 surrogate replaced by U+FFFD (pairs are kept)."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _is_json(scope: Scope) -> bool:
    """Whether the app parses the body as JSON: only with a JSON media type (strict)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type = bytes(value).split(b";", 1)[0].strip().lower()
            return media_type == b"application/json" or media_type.endswith(b"+json")
    return False


def _valid_body(body: bytes) -> bytes:
    if _SURROGATE_ESCAPE.search(body) is None:
        return body
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return body
    fixed, changed = _fix(document)
    if not changed:
        return body
    return json.dumps(fixed, ensure_ascii=False).encode("utf-8")


def _fix(document: Any) -> tuple[Any, bool]:
    """Replace lone surrogates in every string of a parsed JSON document, keys included.

    Iterative, so that a deeply nested document cannot exhaust the interpreter's stack.
    """
    root: list[Any] = [document]
    changed = False
    stack: list[list[Any] | dict[str, Any]] = [root]
    while stack:
        container = stack.pop()
        slots: list[tuple[Any, Any]]
        if isinstance(container, dict):
            for key in [key for key in container if _SURROGATE.search(key)]:
                container[without_lone_surrogates(key)] = container.pop(key)
                changed = True
            slots = list(container.items())
        else:
            slots = list(enumerate(container))
        for slot, value in slots:
            if isinstance(value, str):
                fixed = without_lone_surrogates(value)
                if fixed is not value:
                    container[slot] = fixed
                    changed = True
            elif isinstance(value, list | dict):
                stack.append(value)
    return root[0], changed
