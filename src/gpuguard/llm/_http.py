"""The HTTP layer every server backend shares.

One httpx client wrapper, SSE and NDJSON line parsing, and the ONE place where transport
failures, status codes and in-band error payloads become :class:`~gpuguard.BackendError`
subclasses.

Backends refine the mapping with a *classifier* (a function from a :class:`Failure` to an
error class, or ``None`` for the default rule) instead of catching and re-raising.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .._exceptions import (
    BackendBusy,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    ModelLoadFailed,
    ModelNotFound,
)
from ._protocol import BackendHealth
from ._timeouts import Timeouts

__all__ = [
    "Classifier",
    "Failure",
    "HttpClient",
    "iter_ndjson",
    "iter_sse_data",
    "normalize_base_url",
    "poll_until",
]

logger = logging.getLogger("gpuguard.llm")


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong, as a classifier sees it.

    ``status`` is the HTTP status, or ``None`` for an error that arrived inside a 200
    stream (an SSE data frame or an NDJSON line). ``operation`` is the backend call
    (``health``, ``load``, ``unload``, ``chat``, ``embeddings``, ``list``, ...).
    """

    status: int | None
    message: str
    code: str | None
    operation: str
    model: str | None


#: Returns the error class for a failure, or ``None`` to apply the default rules.
Classifier = Callable[[Failure], type[BackendError] | None]


def normalize_base_url(url: str) -> str:
    """Strip trailing slashes and a trailing ``/v1`` (users often paste the OpenAI base URL)."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"expected an http(s) URL, got {url!r}")
    return url


def _error_fields(body: Any) -> tuple[str, str | None]:
    """Message and code from an OpenAI, Ollama, FastAPI or plain-text error body."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            code = error.get("code")
            return str(error.get("message") or error), str(code) if code is not None else None
        if error is not None:
            return str(error), None
        for key in ("detail", "message"):
            if body.get(key) is not None:
                return str(body[key]), None
        return json.dumps(body), None
    return str(body), None


# llama-server: "exceeds the available context size"; vLLM: "maximum context length is";
# llama-cpp-python's server: "exceed context window"; OpenAI: code context_length_exceeded.
_CONTEXT_OVERFLOW = re.compile(
    r"context_length_exceeded|exceed_context_size|exceeds? (the available )?context"
    r"|maximum context length",
    re.IGNORECASE,
)


def _is_context_overflow(failure: Failure) -> bool:
    if failure.status not in (None, 400, 413):
        return False
    return bool(_CONTEXT_OVERFLOW.search(f"{failure.code or ''} {failure.message}"))


def _default_error(failure: Failure) -> type[BackendError]:
    if failure.code == "model_not_found" and failure.model is not None:
        return ModelNotFound
    if failure.status is None:
        return BackendProtocolError
    if failure.status in (429, 503):
        return BackendBusy
    if failure.status in (408, 504):
        return BackendTimeout
    if failure.status in (401, 403):
        return BackendUnavailable
    if failure.status == 404 and failure.model is not None:
        return ModelNotFound
    if failure.status >= 500 and failure.operation in ("load", "unload"):
        return ModelLoadFailed
    return BackendProtocolError


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
        self._classify = classify
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._client = self._new_client()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, transport=self._transport
        )

    # --- error mapping: the one boundary ---------------------------------------------

    def error(self, failure: Failure, *, url: str) -> BackendError | ContextLengthExceeded:
        """The error for ``failure``: the backend's classifier first, then the defaults.

        A server saying the prompt does not fit the model's context is the caller's
        problem, not the server's: :class:`ContextLengthExceeded`.
        """
        if _is_context_overflow(failure):
            return ContextLengthExceeded(
                "messages",
                f"do not fit the model's context ({self.backend}: {failure.message})",
                backend=self.backend,
                model=failure.model,
            )
        kind = (self._classify(failure) if self._classify else None) or _default_error(failure)
        where = f"HTTP {failure.status} from" if failure.status is not None else "error from"
        return kind(
            f"{self.backend}: {failure.operation} failed ({where} {url}): {failure.message}",
            backend=self.backend,
            model=failure.model,
            url=url,
            status_code=failure.status,
        )

    def error_for_response(
        self, response: httpx.Response, *, operation: str, model: str | None
    ) -> BackendError | ContextLengthExceeded:
        """The error for a non-success response (its body must have been read)."""
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text or response.reason_phrase
        message, code = _error_fields(body)
        failure = Failure(response.status_code, message, code, operation, model)
        return self.error(failure, url=str(response.request.url))

    def decode_event(self, text: str, *, operation: str, model: str | None) -> Any:
        """Decode one streamed JSON event; raise if it is an in-band ``{"error": ...}``."""
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise BackendProtocolError(
                f"{self.backend}: {operation}: undecodable stream event {text[:200]!r}",
                backend=self.backend,
                model=model,
                url=self.base_url,
            ) from exc
        if isinstance(payload, Mapping) and payload.get("error") is not None:
            message, code = _error_fields(payload)
            raise self.error(Failure(None, message, code, operation, model), url=self.base_url)
        return payload

    def _transport_error(
        self, exc: httpx.HTTPError | TimeoutError, *, url: str, operation: str, model: str | None
    ) -> BackendError:
        kind: type[BackendError]
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            kind, what = BackendTimeout, f"{operation} timed out waiting for {url}"
        elif isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
            kind, what = BackendProtocolError, f"{operation}: broken response from {url}: {exc}"
        else:
            reason = str(exc) or type(exc).__name__
            kind, what = BackendUnavailable, f"cannot reach {url} for {operation}: {reason}"
        return kind(f"{self.backend}: {what}", backend=self.backend, model=model, url=url)

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
                    method, path, json=json_body, params=params, timeout=limits
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self._transport_error(exc, url=url, operation=operation, model=model) from exc
        if not response.is_success and response.status_code not in accept:
            raise self.error_for_response(response, operation=operation, model=model)
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
            async with self._client.stream("POST", path, json=json_body, timeout=limits) as resp:
                if not resp.is_success:
                    await resp.aread()
                    raise self.error_for_response(resp, operation=operation, model=model)
                async for line in resp.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, url=url, operation=operation, model=model) from exc

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
            else self.error_for_response(response, operation="health", model=None).args[0]
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

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """Yield the ``data`` payload of each server-sent event, stopping at ``[DONE]``.

    Multi-line data fields are joined with newlines, as the SSE standard says; comments
    (``:``) and other fields (``event``, ``id``, ``retry``) are skipped.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if line == "":
            if data:
                payload = "\n".join(data)
                data.clear()
                if payload.strip() == "[DONE]":
                    return
                yield payload
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data and "\n".join(data).strip() != "[DONE]":
        yield "\n".join(data)


async def iter_ndjson(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """Yield each non-blank line of an NDJSON stream (decode with ``decode_event``)."""
    async for line in lines:
        if line.strip():
            yield line


async def poll_until(
    done: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    interval: float,
    on_timeout: Callable[[], BackendError],
) -> None:
    """Call ``done`` every ``interval`` seconds until it returns True, for at most ``timeout``.

    For servers whose load or unload is asynchronous and that offer nothing but polling.
    """
    try:
        async with asyncio.timeout(timeout):
            # The servers offer nothing to wait on but polling.
            while not await done():  # noqa: ASYNC110
                await asyncio.sleep(interval)
    except TimeoutError as exc:
        raise on_timeout() from exc
