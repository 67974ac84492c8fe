"""The one place where errors become HTTP responses.

Each error of :mod:`gpuguard._exceptions` carries its category and code; the categories map to
status codes here and nowhere else.
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

from .._exceptions import ErrorCategory, GpuGuardError, ModelNotFound
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


# Each error says what it means (its ``category``) and names itself (its ``code``) where it is
# defined, in gpuguard._exceptions; here each category gets its status and OpenAI type.
_STATUS: dict[ErrorCategory, tuple[int, str]] = {
    "busy": (503, "server_busy"),
    "timeout": (504, "timeout"),
    "not_found": (404, "invalid_request_error"),
    "conflict": (409, "invalid_request_error"),
    "invalid": (400, "invalid_request_error"),
    "unprocessable": (422, "invalid_request_error"),
    "unsupported": (501, "invalid_request_error"),
    "upstream": (502, "backend_error"),
    "unavailable": (503, "server_error"),
    "internal": (500, "server_error"),
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
    """The status code, OpenAI error type and code for ``exc``, from its category and code."""
    status, error_type = _STATUS[exc.category]
    return ErrorKind(status, error_type, exc.code)


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
    401: "Missing or invalid bearer token (or a used login link)",
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
