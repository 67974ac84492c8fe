"""Ollama's model routes that describe: list, running, show.

``/api/tags``, ``/api/ps`` and ``/api/show`` describe the gateway's models (and embedders)
whatever the backend. Pull, delete, copy and create change what an Ollama server has on
disk: they are admin routes, in :mod:`._ollama_manage`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from .._exceptions import ModelNotFound
from ..embed._protocol import Embedder
from ..gateway import ModelGateway
from ..llm import OllamaBackend
from ._catalog import canonical, embedder_aliases, embedders_of, weights_size
from ._context import ServerContext, get_context
from ._ollama_schemas import ModelNameRequest
from ._ollama_wire import FOREVER, created_at, digest

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
    # What holds each GPU (its oldest holder), on whichever GPU the model works.
    holding = {s.holder.model for s in report.gpus or (report.gpu,) if s.holder is not None}
    can = chat_capabilities(gateway)
    models = []
    for loaded in report.loaded:
        size = loaded.details.get("size") or loaded.vram_bytes or 0
        entry = _describe(loaded.id, gateway.backend.kind, size, can)
        entry["expires_at"] = loaded.details.get("expires_at") or forever
        entry["size_vram"] = loaded.vram_bytes or 0
        entry["gpuguard"] = {
            "current": loaded.id == report.model,
            "holding_gpu": loaded.id in holding,
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
                "holding_gpu": embedder.name in holding,
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


def _store(gateway: ModelGateway) -> OllamaBackend | None:
    backend = gateway.backend
    return backend if isinstance(backend, OllamaBackend) else None
