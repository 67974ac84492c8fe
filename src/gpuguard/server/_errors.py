"""The one place where errors become HTTP responses.

The error tree of :mod:`gpuguard._exceptions` maps to status codes here and nowhere else.
Every error body has the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``;
outside ``/v1`` the error also carries its context (operation, model, holder, backend).
Under ``/api/`` (the Ollama-compatible API) the body is Ollama's ``{"error": "message"}``,
with the same status code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from .._exceptions import (
    BackendBusy,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    DimensionMismatch,
    DocumentError,
    EmbedderUnavailable,
    EmbeddingError,
    GpuGuardError,
    GuardError,
    GuardUnavailable,
    IndexingError,
    InvalidRequest,
    JobError,
    JobNotFound,
    LeaseLost,
    LeaseNotHeld,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
    NotSupportedByBackend,
    OperationHung,
    QueueFull,
    SourceUnavailable,
    StoreError,
    WaitTimeout,
    WouldBlock,
)
from .._redact import redact
from ._text import JsonResponse

__all__ = [
    "ErrorKind",
    "error_body",
    "error_responses",
    "install_error_handlers",
    "is_ollama_path",
    "kind_of",
    "ollama_error",
]


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """How one error class is answered: a status code, an OpenAI ``type`` and a ``code``."""

    status: int
    type: str
    code: str


# Looked up along the exception's MRO, so the most specific entry wins.
_KINDS: dict[type[GpuGuardError], ErrorKind] = {
    QueueFull: ErrorKind(503, "server_busy", "gpu_queue_full"),
    WaitTimeout: ErrorKind(503, "server_busy", "gpu_wait_timeout"),
    WouldBlock: ErrorKind(503, "server_busy", "gpu_busy"),
    OperationHung: ErrorKind(504, "timeout", "gpu_operation_hung"),
    LeaseNotHeld: ErrorKind(500, "server_error", "lease_not_held"),
    LeaseLost: ErrorKind(503, "server_busy", "gpu_lease_lost"),
    GuardUnavailable: ErrorKind(503, "server_busy", "gpu_guard_unavailable"),
    GuardError: ErrorKind(500, "server_error", "gpu_guard_error"),
    ModelNotFound: ErrorKind(404, "invalid_request_error", "model_not_found"),
    ModelNotLoaded: ErrorKind(409, "invalid_request_error", "model_not_loaded"),
    ModelLoadFailed: ErrorKind(502, "backend_error", "model_load_failed"),
    BackendUnavailable: ErrorKind(502, "backend_error", "backend_unavailable"),
    BackendTimeout: ErrorKind(504, "timeout", "backend_timeout"),
    BackendBusy: ErrorKind(503, "server_busy", "backend_busy"),
    BackendProtocolError: ErrorKind(502, "backend_error", "backend_protocol_error"),
    NotSupportedByBackend: ErrorKind(501, "invalid_request_error", "not_supported_by_backend"),
    BackendError: ErrorKind(502, "backend_error", "backend_error"),
    EmbedderUnavailable: ErrorKind(503, "server_error", "embedder_unavailable"),
    DimensionMismatch: ErrorKind(500, "server_error", "dimension_mismatch"),
    EmbeddingError: ErrorKind(500, "server_error", "embedding_error"),
    SourceUnavailable: ErrorKind(400, "invalid_request_error", "source_unavailable"),
    DocumentError: ErrorKind(422, "invalid_request_error", "document_error"),
    StoreError: ErrorKind(500, "server_error", "store_error"),
    IndexingError: ErrorKind(500, "server_error", "indexing_error"),
    JobNotFound: ErrorKind(404, "invalid_request_error", "job_not_found"),
    JobError: ErrorKind(409, "invalid_request_error", "job_error"),
    ConfigError: ErrorKind(400, "invalid_request_error", "config_error"),
    ContextLengthExceeded: ErrorKind(400, "invalid_request_error", "context_length_exceeded"),
    InvalidRequest: ErrorKind(400, "invalid_request_error", "unsupported_parameter"),
    GpuGuardError: ErrorKind(500, "server_error", "internal_error"),
}

_HTTP_KINDS: dict[int, ErrorKind] = {
    400: ErrorKind(400, "invalid_request_error", "bad_request"),
    401: ErrorKind(401, "invalid_request_error", "invalid_api_key"),
    404: ErrorKind(404, "invalid_request_error", "not_found"),
    405: ErrorKind(405, "invalid_request_error", "method_not_allowed"),
    413: ErrorKind(413, "invalid_request_error", "request_too_large"),
}

_CONTEXT_ATTRIBUTES = ("operation", "model", "holder", "backend", "url", "path", "queue_length")


def kind_of(exc: GpuGuardError) -> ErrorKind:
    """The status code and OpenAI error type for ``exc`` (most specific class wins)."""
    for cls in type(exc).__mro__:
        kind = _KINDS.get(cls)
        if kind is not None:
            return kind
    return _KINDS[GpuGuardError]


def error_body(
    kind: ErrorKind, message: str, *, param: str | None = None, context: dict[str, Any] | None
) -> dict[str, Any]:
    """``{"error": {...}}`` in the OpenAI shape, plus ``context`` where given."""
    error: dict[str, Any] = {
        "message": message,
        "type": kind.type,
        "param": param,
        "code": kind.code,
    }
    if context:
        error["context"] = context
    return {"error": error}


def install_error_handlers(app: FastAPI) -> None:
    """Answer gpuguard errors, validation errors and HTTP errors as JSON error bodies."""
    app.add_exception_handler(GpuGuardError, _gpuguard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)


def _is_openai_path(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def is_ollama_path(path: str) -> bool:
    """Whether ``path`` belongs to the Ollama-compatible API (answered in Ollama's shape)."""
    return path.startswith("/api/")


def ollama_error(exc: GpuGuardError) -> dict[str, str]:
    """Ollama's error shape, for a response body or a line inside an NDJSON stream."""
    return {"error": redact(str(exc))}


def _context(exc: GpuGuardError) -> dict[str, Any]:
    return {
        name: redact(value) if isinstance(value, str) else value
        for name in _CONTEXT_ATTRIBUTES
        if (value := getattr(exc, name, None)) is not None
    }


async def _gpuguard_error(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, GpuGuardError)
    kind = kind_of(exc)
    context = None if _is_openai_path(request) else _context(exc)
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if kind.status == 503:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after or 1)))
    if is_ollama_path(request.url.path):
        return JsonResponse(ollama_error(exc), status_code=kind.status, headers=headers)
    param = "model" if isinstance(exc, ModelNotFound) else getattr(exc, "param", None)
    body = error_body(kind, redact(str(exc)), param=param, context=context)
    return JsonResponse(body, status_code=kind.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    first_param: str | None = None
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            problems.append(_json_problem(error, getattr(exc, "body", None)))
            continue
        where = _field_path(error.get("loc", ()))
        first_param = first_param or where
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    message = "invalid request: " + "; ".join(problems)
    if is_ollama_path(request.url.path):
        return JsonResponse({"error": message}, status_code=400)
    return JsonResponse(
        error_body(_HTTP_KINDS[400], message, param=first_param, context=None), status_code=400
    )


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _field_path(location: Any) -> str:
    """``messages[0].content`` from pydantic's ``("body", "messages", 0, "content")``.

    Union members (``str``, ``list[str]``, ``function-after[...]``) are left out: they are
    pydantic's words, not the caller's.
    """
    path = ""
    for part in location:
        if part == "body" and not path:
            continue
        if isinstance(part, str) and (part in _UNION_TAGS or "[" in part):
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


def _json_problem(error: Any, body: Any) -> str:
    """``body: invalid JSON at line 1 column 9 (Expecting value)``."""
    location = error.get("loc", ())
    position = location[1] if len(location) > 1 and isinstance(location[1], int) else None
    reason = (error.get("ctx") or {}).get("error")
    detail = f" ({reason})" if reason else ""
    if position is None:
        return f"body: invalid JSON{detail}"
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    before = text[:position]
    line = before.count("\n") + 1
    column = position - (before.rfind("\n") + 1) + 1
    return f"body: invalid JSON at line {line} column {column}{detail}"


async def _http_error(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, HTTPException)
    kind = _HTTP_KINDS.get(
        exc.status_code, ErrorKind(exc.status_code, "invalid_request_error", "http_error")
    )
    if is_ollama_path(request.url.path):
        body: dict[str, Any] = {"error": str(exc.detail)}
    else:
        body = error_body(kind, str(exc.detail), context=None)
    return JsonResponse(body, status_code=exc.status_code, headers=exc.headers)


_DESCRIPTIONS = {
    400: "Invalid request: a field missing or out of range, a refused source",
    404: "Unknown model or job",
    409: "The model is not loaded, or the job cannot do that now",
    502: "The LLM server failed or answered something invalid",
    503: "Busy: the GPU queue is full or the wait timed out; retry after Retry-After seconds",
    504: "The LLM server or the GPU operation timed out",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route that may answer these error statuses.

    The body's schema (the error shape) is added with every other error response's when the
    description is built.
    """
    return {status: {"description": _DESCRIPTIONS[status]} for status in statuses}
