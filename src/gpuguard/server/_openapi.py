"""The OpenAPI description, corrected to say what the server really answers.

FastAPI documents a 422 for every route with a body or parameters; gpuguard answers an
invalid request with 400 (the OpenAI convention) in the error shape of
:func:`~gpuguard.server._errors.error_body`. Every documented error response uses that shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ._errors import is_ollama_path

__all__ = ["describe_errors_truthfully"]

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
                "context": {"type": "object"},
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
# The Ollama-compatible API answers errors in Ollama's shape: {"error": "message"}.
_OLLAMA_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_OLLAMA_ERROR_REF = {"$ref": "#/components/schemas/OllamaErrorResponse"}


def describe_errors_truthfully(app: FastAPI) -> None:
    """Make ``app.openapi()`` list 400 instead of 422, with gpuguard's error body."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, routes=app.routes, description=None
            )
            _rewrite(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _rewrite(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["ErrorResponse"] = _ERROR_SCHEMA
    components["OllamaErrorResponse"] = _OLLAMA_ERROR_SCHEMA
    for name, path in schema.get("paths", {}).items():
        error_ref = _OLLAMA_ERROR_REF if is_ollama_path(name) else _ERROR_REF
        for operation in path.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses["400"] = {"description": "Invalid request"}
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    response["content"] = {"application/json": {"schema": error_ref}}
