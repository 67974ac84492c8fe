"""Ollama's model routes: list, running, show, and pull/delete/copy/create.

``/api/tags``, ``/api/ps`` and ``/api/show`` describe the gateway's models (and embedders)
whatever the backend. Pull, delete, copy and create change what an Ollama server has on
disk: they are passed through when the backend is Ollama (pull and create progress
streamed line by line) and answered with a 501 otherwise. They touch no GPU, so they
take no lease.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from .._exceptions import GpuGuardError, ModelNotFound, NotSupportedByBackend
from ..embed._protocol import Embedder
from ..gateway import ModelGateway
from ..llm import OllamaBackend
from ._catalog import canonical, embedder_aliases, embedders_of, weights_size
from ._context import ServerContext, get_context
from ._errors import ollama_error
from ._ollama_schemas import CopyRequest, ModelNameRequest
from ._ollama_wire import FOREVER, created_at, digest, line
from ._streaming import ClosingStreamingResponse

__all__ = ["chat_capabilities", "embedder_names", "resolve_model", "router"]

router = APIRouter(tags=["ollama"])
"""Included under ``/api`` by the Ollama router."""

Context = Annotated[ServerContext, Depends(get_context)]


async def resolve_model(gateway: ModelGateway, name: str) -> str:
    """The gateway's name for the model a client names.

    The name itself, or the known model it means with or without ``:latest``; an unknown
    name passes unchanged (the backend answers for it).
    """
    if name == gateway.model:
        return name
    known = [model.id for model in await gateway.models()]
    if name in known:
        return name
    return next((m for m in known if canonical(m) == canonical(name)), name)


def embedder_names(gateway: ModelGateway) -> dict[str, str]:
    """Every name an embedding request may use, mapped to the full one (see _catalog)."""
    return embedder_aliases(gateway.gpu_embedder, gateway.cpu_embedder)


def chat_capabilities(gateway: ModelGateway) -> list[str]:
    """What the backend's models can do, in Ollama's words (``/api/show``, ``/api/tags``)."""
    return ["completion", *(["tools"] if "tools" in gateway.backend.chat_parameters else [])]


def _details(backend: str, *, family: str = "") -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf" if backend in ("llama-cpp", "ollama") else backend,
        "family": family,
        "families": [family] if family else None,
        "parameter_size": "",
        "quantization_level": "",
    }


def _describe(
    name: str, backend: str, size: int, capabilities: list[str], *, family: str = ""
) -> dict[str, Any]:
    """One model in Ollama's list shape; ``capabilities`` as ``/api/show`` says them."""
    return {
        "name": name,
        "model": name,
        "size": size,
        "digest": digest(name),
        "details": _details(backend, family=family),
        "capabilities": capabilities,
    }


def _embedder_entry(embedder: Embedder) -> dict[str, Any]:
    size = weights_size(embedder.name)
    return _describe(embedder.name, "embedder", size, ["embedding"], family="embedding")


@router.get("/tags")
async def tags(context: Context) -> dict[str, Any]:
    """The backend's models and the embedding models, in Ollama's list shape.

    Each entry says what the model can do in an extra ``capabilities`` field, in the words
    of Ollama's ``/api/show`` (``completion``, ``tools``; ``embedding``).
    """
    gateway = context.gateway
    now = created_at()
    can = chat_capabilities(gateway)
    models = [
        {**_describe(m.id, gateway.backend.kind, m.vram_bytes or 0, can), "modified_at": now}
        for m in await gateway.models()
    ]
    listed = {m["name"] for m in models}
    for embedder, _ in embedders_of(gateway):
        if embedder.name not in listed:
            models.append({**_embedder_entry(embedder), "modified_at": now})
    return {"models": models}


@router.get("/ps")
async def ps(context: Context) -> dict[str, Any]:
    """The loaded models, embedders included, with ``size``, ``size_vram``, ``expires_at``.

    gpuguard's lease state is in the extra ``gpuguard`` fields: per model, and for the GPU.
    """
    gateway = context.gateway
    report = await gateway.status()
    forever = created_at(dt.datetime.now(dt.UTC) + FOREVER)
    holder = report.gpu.holder
    can = chat_capabilities(gateway)
    models = []
    for loaded in report.loaded:
        size = loaded.details.get("size") or loaded.vram_bytes or 0
        entry = _describe(loaded.id, gateway.backend.kind, size, can)
        entry["expires_at"] = loaded.details.get("expires_at") or forever
        entry["size_vram"] = loaded.vram_bytes or 0
        entry["gpuguard"] = {
            "current": loaded.id == report.model,
            "holding_gpu": holder is not None and holder.model == loaded.id,
        }
        models.append(entry)
    for embedder, loaded_now in embedders_of(gateway):
        if loaded_now:
            entry = _embedder_entry(embedder)
            on_gpu = embedder.device not in ("cpu", "remote")
            entry["expires_at"] = forever
            entry["size_vram"] = entry["size"] if on_gpu else 0
            entry["gpuguard"] = {
                "device": embedder.device,
                "holding_gpu": holder is not None and holder.model == embedder.name,
            }
            models.append(entry)
    return {"models": models, "gpuguard": {"gpu": report.gpu.to_dict()}}


@router.post("/show")
async def show(body: ModelNameRequest, context: Context) -> dict[str, Any]:
    """A model's details: Ollama's own answer for its LLMs when it is the backend.

    Embedders and the LLMs of other backends are described from what gpuguard knows.
    """
    gateway = context.gateway
    name = body.model_name
    embedders = embedder_names(gateway)
    if name in embedders:
        return _shown(embedders[name], "embedder", ["embedding"], family="embedding")
    store = _store(gateway)
    if store is not None:
        answer: dict[str, Any] = await store.manage(
            "POST", "/api/show", body.forwarded(), operation="show", model=name
        )
        return answer
    resolved = await resolve_model(gateway, name)
    if resolved not in {m.id for m in await gateway.models()}:
        raise ModelNotFound(f"model '{name}' not found", backend=gateway.backend.kind, model=name)
    return _shown(resolved, gateway.backend.kind, chat_capabilities(gateway))


def _shown(name: str, backend: str, capabilities: list[str], *, family: str = "") -> dict[str, Any]:
    return {
        "modelfile": f"# Served by gpuguard\nFROM {name}\n",
        "template": "",
        "details": _details(backend, family=family),
        "model_info": {"general.architecture": family or backend},
        "capabilities": capabilities,
        "modified_at": created_at(),
    }


@router.post("/pull", response_model=None)
async def pull(body: ModelNameRequest, context: Context) -> Response:
    """Pull through to Ollama, its progress streamed line by line (or only the last)."""
    return await _progress(context, "/api/pull", body, operation="pull")


@router.post("/create", response_model=None)
async def create(body: ModelNameRequest, context: Context) -> Response:
    """Create through to Ollama, its progress streamed line by line (or only the last)."""
    return await _progress(context, "/api/create", body, operation="create")


@router.delete("/delete")
async def delete(body: ModelNameRequest, context: Context) -> Response:
    """Delete through to Ollama: 200 with an empty body, 404 for an unknown model."""
    store = _required_store(context.gateway, "delete")
    name = body.model_name
    await store.manage("DELETE", "/api/delete", {"model": name}, operation="delete", model=name)
    return Response(status_code=200)


@router.post("/copy")
async def copy(body: CopyRequest, context: Context) -> Response:
    """Copy through to Ollama: 200 with an empty body, 404 for an unknown source."""
    store = _required_store(context.gateway, "copy")
    await store.manage("POST", "/api/copy", body.model_dump(), operation="copy", model=body.source)
    return Response(status_code=200)


def _store(gateway: ModelGateway) -> OllamaBackend | None:
    backend = gateway.backend
    return backend if isinstance(backend, OllamaBackend) else None


def _required_store(gateway: ModelGateway, operation: str) -> OllamaBackend:
    store = _store(gateway)
    if store is None:
        kind = gateway.backend.kind
        raise NotSupportedByBackend(
            f"{operation} manages an Ollama server's models, and this server's backend is "
            f"{kind!r}: manage its models with that backend's own tools",
            backend=kind,
        )
    return store


async def _progress(
    context: ServerContext, path: str, body: ModelNameRequest, *, operation: str
) -> Response:
    store = _required_store(context.gateway, operation)
    name = body.model_name
    events = store.manage_stream(path, body.forwarded(), operation=operation, model=name)
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise
    if not body.stream:
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
