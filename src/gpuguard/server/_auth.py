"""Which names and origins the server answers to (the token is :mod:`._access`'s).

Settings refuse a non-loopback bind address without a token; :class:`HostCheck` refuses
requests for any other name than the server's own (DNS rebinding) and state-changing
requests from another origin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ._errors import ErrorKind, error_body

__all__ = ["LOOPBACK_NAMES", "HostCheck", "allowed_host_names"]


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""The names a loopback server answers to, whatever its port."""

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MISDIRECTED = ErrorKind(421, "invalid_request_error", "unknown_host")
_CROSS_ORIGIN = ErrorKind(403, "invalid_request_error", "cross_origin")


class HostCheck:
    """Answer only to the server's own names: the DNS rebinding and cross-origin defence.

    A request whose ``Host`` header names anything but ``allowed`` (any port) gets 421,
    so a web page on a rebinding domain cannot reach a loopback server. A state-changing
    request (not GET/HEAD/OPTIONS) that carries an ``Origin`` must come from the same origin
    as its ``Host`` (scheme aside, so that a TLS proxy in front works), else 403: the
    server's own page keeps working, another site's form or script does not.
    """

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(name.strip().lower().strip("[]") for name in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check ``Host`` (and ``Origin`` for unsafe methods) before the app sees anything."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if _bare_host(host) not in self.allowed:
            await _reject(send, _MISDIRECTED, "the Host header does not name this server")
            return
        origin = headers.get("origin")
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET") not in _SAFE_METHODS
        if unsafe and origin is not None and not _same_origin(origin, host):
            await _reject(send, _CROSS_ORIGIN, "cross-origin requests may not change anything")
            return
        await self.app(scope, receive, send)


def allowed_host_names(bind_host: str, extra: Iterable[str]) -> list[str]:
    """The names a server bound to ``bind_host`` answers to: loopback names, then the rest.

    A server bound to a specific non-loopback address answers to that address too; one
    bound to every address (``0.0.0.0``, ``::``) answers only to the names configured.
    """
    names = list(LOOPBACK_NAMES)
    if bind_host not in ("0.0.0.0", "::", ""):
        names.append(bind_host)
    return names + list(extra)


def _bare_host(host: str) -> str:
    """``name[:port]`` or ``[v6][:port]`` -> the lower-case name, without brackets.

    Anything else (``[::1].evil.invalid``, ``[::1]x``, a bare ``::1``, an empty or
    non-numeric port) is not an authority and gives ``""``, which names no server.
    """
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and _is_port(rest[1:]))):
            return ""
        return host[1:end]
    name, colon, port = host.rpartition(":")
    if not colon:
        return host
    return name if name and ":" not in name and _is_port(port) else ""


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5


def _same_origin(origin: str, host: str) -> bool:
    parsed = urlsplit(origin)
    return parsed.scheme in ("http", "https") and parsed.netloc.lower() == host.strip().lower()


async def _reject(send: Send, kind: ErrorKind, message: str) -> None:
    body = json.dumps(error_body(kind, message, context=None)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": kind.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
