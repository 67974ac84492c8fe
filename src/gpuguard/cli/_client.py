"""A small synchronous client for a running gpuguard server, with errors made readable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .._server_file import read_server_token
from ._output import fail

__all__ = ["DEFAULT_URL", "ServerClient", "ServerError", "connected"]

DEFAULT_URL = "http://127.0.0.1:8765"
"""Where ``gpuguard serve`` listens unless told otherwise."""


class ServerError(Exception):
    """The server could not be reached, or answered with an error."""


class ServerClient:
    """Talks JSON (and the chat stream) to one server."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float | None = 30.0) -> None:
        """``timeout`` bounds each request (``None``: no limit, for operations of minutes).

        Without ``token``, the one this user's ``gpuguard serve`` left for a loopback ``url``.
        """
        token = token or read_server_token(url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

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
        try:
            return self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise ServerError(
                f"no gpuguard server answers at {self.url} ({exc}); start one with "
                "`gpuguard serve` or pass --url"
            ) from exc

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.is_error:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            message = error.get("message") or response.reason_phrase
            raise ServerError(f"{response.status_code}: {message}")
        return body


@contextmanager
def connected(
    url: str, token: str | None, *, timeout: float | None = 30.0
) -> Iterator[ServerClient]:
    """A client of the server at ``url`` for one command's body.

    A :class:`ServerError` out of the body ends the command: ``error: ...`` and exit 1.
    """
    with ServerClient(url, token=token, timeout=timeout) as client:
        try:
            yield client
        except ServerError as exc:
            raise fail(str(exc)) from exc
