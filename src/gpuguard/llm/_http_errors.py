"""The ONE place where an HTTP server's failures become :class:`~gpuguard.BackendError` subclasses.

Transport failures, status codes and in-band error payloads (an SSE data frame or an NDJSON
line saying ``{"error": ...}``) all go through :class:`ErrorMap`. Backends refine the mapping
with a *classifier* (a function from a :class:`Failure` to an error class, or ``None`` for
the default rule) instead of catching and re-raising.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from .._exceptions import (
    BackendBusy,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ContextLengthExceeded,
    ModelLoadFailed,
    ModelNotFound,
)

__all__ = ["Classifier", "ErrorMap", "Failure"]

_Error = TypeVar("_Error", bound=BackendError)


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


class ErrorMap:
    """One server's failures as errors of the tree, each naming the backend and the URL."""

    def __init__(self, backend: str, base_url: str, classify: Classifier | None) -> None:
        self.backend = backend
        self.base_url = base_url
        self._classify = classify

    def fault(
        self,
        error: type[_Error],
        what: str,
        *,
        model: str | None = None,
        status_code: int | None = None,
    ) -> _Error:
        """``error`` saying ``what`` this server did wrong (the message names the backend)."""
        return error(
            f"{self.backend}: {what}",
            backend=self.backend,
            model=model,
            url=self.base_url,
            status_code=status_code,
        )

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

    def for_response(
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

    def for_transport(
        self, exc: httpx.HTTPError | TimeoutError, *, url: str, operation: str, model: str | None
    ) -> BackendError:
        """The error for a request that got no answer: timed out, broken or unreachable."""
        kind: type[BackendError]
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            kind, what = BackendTimeout, f"{operation} timed out waiting for {url}"
        elif isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
            kind, what = BackendProtocolError, f"{operation}: broken response from {url}: {exc}"
        else:
            reason = str(exc) or type(exc).__name__
            kind, what = BackendUnavailable, f"cannot reach {url} for {operation}: {reason}"
        return kind(f"{self.backend}: {what}", backend=self.backend, model=model, url=url)

    def decode_event(self, text: str, *, operation: str, model: str | None) -> Any:
        """Decode one streamed JSON event; raise if it is an in-band ``{"error": ...}``."""
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise self.fault(
                BackendProtocolError,
                f"{operation}: undecodable stream event {text[:200]!r}",
                model=model,
            ) from exc
        if isinstance(payload, Mapping) and payload.get("error") is not None:
            message, code = _error_fields(payload)
            raise self.error(Failure(None, message, code, operation, model), url=self.base_url)
        return payload
