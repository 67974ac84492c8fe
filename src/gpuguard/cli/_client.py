"""A small synchronous client for a running gpuguard server, with errors made readable.

Every command finds the server the same way (:func:`server_address`): ``--url`` (or
``GPUGUARD_URL``), else the settings the server itself reads (``GPUGUARD_SERVER__HOST``,
``GPUGUARD_SERVER__PORT``, the ``GPUGUARD_CONFIG`` file), else ``http://127.0.0.1:8765``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError
from .._server_file import read_server_token
from ._output import fail

if TYPE_CHECKING:
    import httpx

    from ..settings import ServerSettings

__all__ = ["ServerClient", "ServerError", "connected", "resolved", "server_address", "url_of"]

# A 404 or 405 on a route every gpuguard server has means the URL names something else.
_WRONG_PLACE = frozenset({404, 405})


class ServerError(Exception):
    """The server could not be reached, or answered with an error."""


def url_of(server: ServerSettings) -> str:
    """The URL a client on this machine reaches ``server`` at (a wildcard bind: loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(server.host, server.host)
    return f"http://[{host}]:{server.port}" if ":" in host else f"http://{host}:{server.port}"


def server_address(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The server's URL and token: as given, else from the settings; ConfigError if invalid."""
    if url and token:
        return url, token
    from ..settings import load_settings  # pydantic: only for a command that reads settings

    server = load_settings().server
    secret = server.token.get_secret_value() if server.token else None
    return url or url_of(server), token or secret


def resolved(url: str | None, token: str | None) -> tuple[str, str | None]:
    """:func:`server_address` for a command: invalid settings end it (exit 2)."""
    try:
        return server_address(url, token)
    except ConfigError as exc:
        raise fail(str(exc), 2) from exc


class ServerClient:
    """Talks JSON (and the chat stream) to one server."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float | None = 30.0) -> None:
        """``timeout`` bounds each request (``None``: no limit, for operations of minutes).

        Without ``token``, the one this user's ``gpuguard serve`` left for a loopback ``url``.
        """
        import httpx  # here: a command that talks to no server never imports it

        token = token or read_server_token(url)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)

    def get(self, path: str) -> dict[str, Any]:
        """GET ``path`` as JSON."""
        return self._json(self._send("GET", path))

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST ``body`` to ``path``; the JSON answer."""
        return self._json(self._send("POST", path, json=body or {}))

    def chat_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The ``data:`` payloads of a streamed chat completion."""
        request = self._http.build_request(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        )
        response = self._transmit(request, stream=True)
        try:
            if response.is_error:
                response.read()
                self._json(response)
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    payload: dict[str, Any] = json.loads(line[6:])
                    if "error" in payload:
                        raise ServerError(payload["error"].get("message", "stream failed"))
                    yield payload
        finally:
            response.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._transmit(self._http.build_request(method, path, **kwargs))

    def _transmit(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        import httpx

        try:
            return self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise ServerError(
                f"no gpuguard server answers at {self.url} ({exc}); start one with "
                "`gpuguard serve`, or pass --url (or set server.port) to find it"
            ) from exc

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.is_error:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            message = error.get("message") if isinstance(error, dict) else error
            reason = f"{response.status_code}: {message or response.reason_phrase}"
            if response.status_code in _WRONG_PLACE:
                from ._probe import stranger

                other = stranger(self.url, self._headers)
                if other is not None:
                    raise ServerError(f"{reason} from {response.request.url.path}: {other}")
            raise ServerError(reason)
        return body


@contextmanager
def connected(
    url: str | None, token: str | None, *, timeout: float | None = 30.0
) -> Iterator[ServerClient]:
    """A client of the server at ``url`` (None: see :func:`server_address`) for one command.

    A :class:`ServerError` out of the body ends the command: ``error: ...`` and exit 1; a
    settings error (when the address comes from the settings): exit 2.
    """
    address, secret = resolved(url, token)
    with ServerClient(address, token=secret, timeout=timeout) as client:
        try:
            yield client
        except ServerError as exc:
            raise fail(str(exc)) from exc
