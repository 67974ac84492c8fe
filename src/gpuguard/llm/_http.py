"""The HTTP client every server backend shares.

One httpx client bound to one server: bounded requests, streamed events, health probes,
closing the requests in flight, and polling. Every failure it meets becomes a
:class:`~gpuguard.BackendError` subclass through its
:class:`~gpuguard.llm._http_errors.ErrorMap`, the one place where transport failures,
status codes and in-band errors are mapped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from contextlib import aclosing
from typing import Any

import httpx

from .._exceptions import BackendError, BackendProtocolError, ConfigError
from ..guard._fences import fence_headers
from ._framing import Framing
from ._http_errors import Classifier, ErrorMap
from ._protocol import BackendHealth
from ._timeouts import Timeouts

__all__ = ["HttpClient", "normalize_base_url"]

logger = logging.getLogger("gpuguard.llm")


def normalize_base_url(url: str) -> str:
    """Strip trailing slashes and a trailing ``/v1`` (users often paste the OpenAI base URL)."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"expected an http(s) URL, got {url!r}")
    return url


class HttpClient:
    """An httpx client bound to one server, raising only :class:`BackendError` subclasses.

    Every request is bounded: non-streaming calls by a total deadline, streams by
    ``Timeouts.read_s`` between chunks.
    """

    def __init__(
        self,
        base_url: str,
        *,
        backend: str,
        timeouts: Timeouts,
        api_key: str | None = None,
        classify: Classifier | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.backend = backend
        self.timeouts = timeouts
        self.errors = ErrorMap(backend, self.base_url, classify)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._client = self._new_client()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, transport=self._transport
        )

    # --- requests --------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        timeout: float,
        model: str | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        accept: Collection[int] = (),
    ) -> httpx.Response:
        """Send one request and read the whole answer within ``timeout`` seconds.

        A status outside 2xx raises, unless it is in ``accept`` (the caller then reads it).
        """
        url = f"{self.base_url}{path}"
        limits = httpx.Timeout(timeout, connect=min(timeout, self.timeouts.connect_s))
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.request(
                    method,
                    path,
                    json=json_body,
                    params=params,
                    headers=fence_headers(),  # the lease's token, for a gpuguard behind us
                    timeout=limits,
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self.errors.for_transport(exc, url=url, operation=operation, model=model) from exc
        if not response.is_success and response.status_code not in accept:
            raise self.errors.for_response(response, operation=operation, model=model)
        return response

    async def json(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        timeout: float,
        model: str | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and decode its JSON answer (``None`` for an empty body)."""
        response = await self.request(
            method,
            path,
            operation=operation,
            timeout=timeout,
            model=model,
            json_body=json_body,
            params=params,
        )
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise BackendProtocolError(
                f"{self.backend}: {operation}: {response.request.url} answered non-JSON "
                f"{response.text[:200]!r}",
                backend=self.backend,
                model=model,
                url=str(response.request.url),
                status_code=response.status_code,
            ) from exc

    async def listing(self, path: str, key: str, *, operation: str) -> list[Any]:
        """``GET path`` and the list its JSON object holds under ``key``.

        Bounded by ``Timeouts.request_s``; any other answer is a protocol error naming ``path``.
        """
        answer = await self.json("GET", path, operation=operation, timeout=self.timeouts.request_s)
        entries = answer.get(key) if isinstance(answer, Mapping) else None
        if not isinstance(entries, list):
            raise self.errors.fault(
                BackendProtocolError, f"unexpected {path} answer {answer!r:.200}"
            )
        return entries

    async def stream_lines(
        self, path: str, *, operation: str, model: str | None, json_body: Any
    ) -> AsyncGenerator[str, None]:
        """POST ``json_body`` and yield the answer's lines as they arrive.

        Waits at most ``read_s`` for each chunk. Closing the iterator closes the
        connection, which is how servers learn to stop generating; wrap it in
        :func:`contextlib.aclosing` so that happens at once.
        """
        url = f"{self.base_url}{path}"
        limits = httpx.Timeout(self.timeouts.read_s, connect=self.timeouts.connect_s)
        try:
            headers = fence_headers()  # the lease's token, for a gpuguard behind us
            async with self._client.stream(
                "POST", path, json=json_body, headers=headers, timeout=limits
            ) as resp:
                if not resp.is_success:
                    await resp.aread()
                    raise self.errors.for_response(resp, operation=operation, model=model)
                async for line in resp.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise self.errors.for_transport(exc, url=url, operation=operation, model=model) from exc

    async def stream_events(
        self, path: str, framing: Framing, *, operation: str, model: str | None, json_body: Any
    ) -> AsyncGenerator[Mapping[str, Any], None]:
        """POST ``json_body`` and yield each JSON object the answer streams, cut by ``framing``.

        The one stream decoder of every server: an in-band ``{"error": ...}`` event raises
        (mapped like an HTTP error), and so does an event that is not a JSON object.
        Closing the iterator closes the connection, which stops generation.
        """
        lines = self.stream_lines(path, operation=operation, model=model, json_body=json_body)
        async with aclosing(lines), aclosing(framing(lines)) as frames:
            async for frame in frames:
                event = self.errors.decode_event(frame, operation=operation, model=model)
                if not isinstance(event, Mapping):
                    raise self.errors.fault(
                        BackendProtocolError,
                        f"{operation} stream sent a non-object event {event!r:.200}",
                        model=model,
                    )
                yield event

    async def probe(self, path: str, *, accept: Collection[int] = ()) -> BackendHealth:
        """GET ``path`` with the health timeout; never raises for a down server."""
        try:
            response = await self.request(
                "GET", path, operation="health", timeout=self.timeouts.health_s, accept=accept
            )
        except BackendError as exc:
            return BackendHealth(ok=False, backend=self.backend, url=self.base_url, detail=str(exc))
        ok = response.is_success
        detail = (
            response.text[:200]
            if ok
            else self.errors.for_response(response, operation="health", model=None).args[0]
        )
        return BackendHealth(ok=ok, backend=self.backend, url=self.base_url, detail=detail)

    async def cancel_requests(self) -> None:
        """Close every request in flight; later calls get a fresh connection pool.

        A request cut this way fails at once with a :class:`~gpuguard.BackendError`, and
        the server sees its client leave (Ollama, llama-server and vLLM stop generating
        for a client that has gone). Used by ``abort``; other calls in flight fail too.
        """
        old, self._client = self._client, self._new_client()
        try:
            async with asyncio.timeout(self.timeouts.connect_s):
                await old.aclose()
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            logger.warning("%s: closing the requests in flight failed: %r", self.backend, exc)

    async def best_effort(self, step: Awaitable[None], *, operation: str, model: str) -> None:
        """Await ``step`` within ``Timeouts.abort_s``; log, never raise, when it fails."""
        try:
            async with asyncio.timeout(self.timeouts.abort_s):
                await step
        except (BackendError, TimeoutError) as exc:
            logger.warning(
                "%s: %s of %r did not complete: %s",
                self.backend,
                operation,
                model,
                exc or "timeout",
            )

    async def poll_until(
        self,
        done: Callable[[], Awaitable[bool]],
        *,
        timeout: float,
        on_timeout: Callable[[], BackendError],
    ) -> None:
        """Call ``done`` every ``Timeouts.poll_interval_s`` until it is True, at most ``timeout``.

        For servers whose load or unload is asynchronous and that offer nothing but polling;
        past ``timeout`` it raises ``on_timeout()``.
        """
        try:
            async with asyncio.timeout(timeout):
                # The servers offer nothing to wait on but polling.
                while not await done():  # noqa: ASYNC110
                    await asyncio.sleep(self.timeouts.poll_interval_s)
        except TimeoutError as exc:
            raise on_timeout() from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
