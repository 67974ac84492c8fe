"""Ollama's model management through gpuguard: pull, create, delete, copy, behind the token.

They change what an Ollama server has on disk, so they are admin routes (the app includes
:data:`router` with the admin token), and only what Ollama documents is forwarded: each body
is a closed model (an unknown field is a 400 naming it), and on top of that
:class:`ManagementPolicy` refuses, unless the operator allows them,

- an insecure registry (``"insecure": true``: plain HTTP, no certificate check);
- a model named on a registry that is not on ``server.ollama_registries`` (so a caller cannot
  make the Ollama server fetch from ``127.0.0.1:22999/internal/...``);
- anything that names a file on the Ollama host: ``create`` with a ``modelfile`` or ``path``
  (the old forms that read a Modelfile and its ``FROM`` from disk), ``from`` a path, or
  ``files``/``adapters`` that are not blob digests (``sha256:<64 hex>``);
- deleting the model this server serves.

They touch no GPU, so they take no lease; with a backend other than Ollama they answer 501.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from .._exceptions import GpuGuardError, InvalidRequest, NotSupportedByBackend
from ..gateway import ModelGateway
from ..llm import OllamaBackend
from ._context import ServerContext, get_context
from ._errors import ollama_error
from ._ollama_schemas import ModelNamed
from ._ollama_wire import line
from ._streaming import ClosingStreamingResponse

__all__ = ["ManagementPolicy", "router"]

router = APIRouter(tags=["ollama"])
"""Included under ``/api`` with the admin token."""

Context = Annotated[ServerContext, Depends(get_context)]
Name = Annotated[str, Field(min_length=1, max_length=256)]

_DIGEST = re.compile(r"sha256[:-][0-9a-f]{64}")
_PATH_LIKE = re.compile(r"^(?:[/~.\\]|[a-zA-Z]:[\\/])|[\\]|(?:^|/)\.\.(?:/|$)")


@dataclass(frozen=True, slots=True)
class ManagementPolicy:
    """What the operator lets callers ask of the Ollama server (``server.ollama_*``)."""

    registries: frozenset[str] = frozenset({"registry.ollama.ai", "ollama.com", "hf.co"})
    allow_insecure: bool = False
    allow_local_paths: bool = False

    def check_name(self, field: str, name: str) -> None:
        """Refuse a model name on a registry the operator did not list, or a path."""
        if _PATH_LIKE.search(name):
            self._local(field, name)
        registry = _registry(name)
        if registry is not None and registry not in self.registries:
            raise InvalidRequest(
                field,
                f"names the registry {registry!r}, which this server does not pull from "
                f"(allowed: {', '.join(sorted(self.registries))}; server.ollama_registries)",
            )

    def check_insecure(self, insecure: bool) -> None:
        """Refuse ``"insecure": true`` unless the operator allows insecure registries."""
        if insecure and not self.allow_insecure:
            raise InvalidRequest(
                "insecure",
                "is refused: this server pulls over verified TLS only "
                "(server.ollama_allow_insecure)",
            )

    def check_blobs(self, field: str, blobs: Mapping[str, str] | None) -> None:
        """``files``/``adapters`` name blobs already on the Ollama server, never files."""
        for file_name, digest in (blobs or {}).items():
            if _PATH_LIKE.search(file_name) or "/" in file_name:
                self._local(field, file_name)
            if not _DIGEST.fullmatch(digest):
                self._local(field, digest)

    def check_local(self, field: str, value: object) -> None:
        """Refuse a field that reads files on the Ollama host, unless the operator allows."""
        if value is not None:
            self._local(field, str(value))

    def _local(self, field: str, _value: str) -> None:
        if not self.allow_local_paths:
            raise InvalidRequest(
                field,
                "names a file on the Ollama server's host, which callers may not "
                "(server.ollama_allow_local_paths)",
            )


def _registry(name: str) -> str | None:
    """The registry host of ``[host/][namespace/]model[:tag]``, if the name has one."""
    parts = name.split("/")
    if len(parts) < 2:
        return None
    first = parts[0].lower()
    if len(parts) >= 3 or "." in first or ":" in first or first == "localhost":
        return first
    return None


class _Named(ModelNamed):
    """A model named by ``model`` or, in older clients, ``name``; nothing undocumented."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    def forwarded(self) -> dict[str, Any]:
        """The body as Ollama documents it: set fields only, ``model`` for the name."""
        body = self.model_dump(by_alias=True, exclude={"name"}, exclude_none=True)
        body["model"] = self.model_name
        return body


class PullRequest(_Named):
    """``POST /api/pull``: ``model``, ``insecure``, ``stream``."""

    insecure: bool = False
    stream: bool = True


class CreateRequest(_Named):
    """``POST /api/create`` as Ollama documents it (``modelfile``/``path``: the old forms)."""

    from_: str | None = Field(default=None, alias="from", max_length=256)
    files: dict[str, str] | None = Field(default=None, max_length=256)
    adapters: dict[str, str] | None = Field(default=None, max_length=64)
    template: str | None = Field(default=None, max_length=65_536)
    license: str | list[str] | None = None
    system: str | None = Field(default=None, max_length=65_536)
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = Field(default=None, max_length=256)
    quantize: str | None = Field(default=None, max_length=32)
    modelfile: str | None = Field(default=None, max_length=65_536)
    path: str | None = Field(default=None, max_length=4096)
    stream: bool = True


class DeleteRequest(_Named):
    """``DELETE /api/delete``: ``model``."""


class CopyRequest(BaseModel):
    """``POST /api/copy``: ``source`` and ``destination``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    source: Name
    destination: Name


def _policy(request: Request) -> ManagementPolicy:
    policy: ManagementPolicy = request.app.state.model_policy
    return policy


Policy = Annotated[ManagementPolicy, Depends(_policy)]


@router.post("/pull", response_model=None)
async def pull(body: PullRequest, context: Context, policy: Policy) -> Response:
    """Pull through to Ollama, its progress streamed line by line (or only the last)."""
    policy.check_name("model", body.model_name)
    policy.check_insecure(body.insecure)
    return await _progress(context, "/api/pull", body, stream=body.stream, operation="pull")


@router.post("/create", response_model=None)
async def create(body: CreateRequest, context: Context, policy: Policy) -> Response:
    """Create through to Ollama, its progress streamed line by line (or only the last)."""
    policy.check_name("model", body.model_name)
    if body.from_ is not None:
        policy.check_name("from", body.from_)
    policy.check_blobs("files", body.files)
    policy.check_blobs("adapters", body.adapters)
    policy.check_local("modelfile", body.modelfile)
    policy.check_local("path", body.path)
    return await _progress(context, "/api/create", body, stream=body.stream, operation="create")


@router.delete("/delete")
async def delete(body: DeleteRequest, context: Context) -> Response:
    """Delete through to Ollama: 200 with an empty body, 404 for an unknown model.

    The model this server serves is refused: switch to another one first.
    """
    store = _required_store(context.gateway, "delete")
    name = body.model_name
    if name == context.gateway.model:
        raise InvalidRequest("model", "is the model this server serves: switch to another first")
    await store.manage("DELETE", "/api/delete", {"model": name}, operation="delete", model=name)
    return Response(status_code=200)


@router.post("/copy")
async def copy(body: CopyRequest, context: Context, policy: Policy) -> Response:
    """Copy through to Ollama: 200 with an empty body, 404 for an unknown source."""
    policy.check_name("source", body.source)
    policy.check_name("destination", body.destination)
    store = _required_store(context.gateway, "copy")
    await store.manage("POST", "/api/copy", body.model_dump(), operation="copy", model=body.source)
    return Response(status_code=200)


def _required_store(gateway: ModelGateway, operation: str) -> OllamaBackend:
    backend = gateway.backend
    if not isinstance(backend, OllamaBackend):
        kind = backend.kind
        raise NotSupportedByBackend(
            f"{operation} manages an Ollama server's models, and this server's backend is "
            f"{kind!r}: manage its models with that backend's own tools",
            backend=kind,
        )
    return backend


async def _progress(
    context: ServerContext, path: str, body: _Named, *, stream: bool, operation: str
) -> Response:
    store = _required_store(context.gateway, operation)
    events = store.manage_stream(path, body.forwarded(), operation=operation, model=body.model_name)
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise
    if not stream:
        last = first
        async with aclosing(events):
            async for event in events:
                last = event
        return JSONResponse(dict(last))
    return ClosingStreamingResponse(_lines(first, events), media_type="application/x-ndjson")


async def _lines(
    first: Mapping[str, Any], events: AsyncGenerator[Mapping[str, Any], None]
) -> AsyncGenerator[str, None]:
    async with aclosing(events):
        yield line(dict(first))
        try:
            async for event in events:
                yield line(dict(event))
        except GpuGuardError as exc:
            # The status line went out with the first event: Ollama reports later errors
            # as a last line, and its clients raise on it.
            yield line(ollama_error(exc))
