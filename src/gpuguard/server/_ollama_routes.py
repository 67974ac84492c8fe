"""Ollama's native API in front of any backend: chat, generate, embeddings, version.

Every GPU operation goes through the gateway, as for the OpenAI routes: ``/api/chat`` and
``/api/generate`` stream through :meth:`ModelGateway.chat`, which holds the interactive
lease for the whole answer; an empty conversation or prompt loads the model
(:meth:`ModelGateway.load`) and, with ``keep_alive: 0``, unloads it
(:meth:`ModelGateway.unload`), both under the lease. Embeddings go through
:meth:`ModelGateway.embed`.

When the GPU is busy, a stream's first line is an otherwise empty answer object
(``"done": false`` and no text) with an extra ``gpuguard`` field carrying the "Waiting for
GPU..." notice; Ollama clients add its empty text and ignore the field.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .. import __version__
from .._exceptions import GpuGuardError, ModelNotFound
from ..gateway import GpuWaiting, ModelGateway
from ..llm import ChatChunk, ChatMessage
from . import _ollama_models
from ._context import ServerContext, get_context
from ._errors import ollama_error
from ._ollama_models import embedder_names, resolve_model
from ._ollama_schemas import (
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    OllamaChatRequest,
    chat_parameters,
)
from ._ollama_wire import CHAT, GENERATE, Shape, Timing, answer_item, line
from ._openai_routes import _ClosingStreamingResponse, _first_item, _items

__all__ = ["OLLAMA_API_VERSION", "root_router", "router"]

#: The Ollama release whose API these routes follow; clients check it for features.
OLLAMA_API_VERSION = "0.12.0"

router = APIRouter(prefix="/api", tags=["ollama"])
router.include_router(_ollama_models.router)

root_router = APIRouter(tags=["ollama"])
"""``GET /`` and ``HEAD /`` answering "Ollama is running", for the Ollama port."""

Context = Annotated[ServerContext, Depends(get_context)]
ChatStream = AsyncGenerator[ChatChunk | GpuWaiting, None]


@root_router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def running() -> PlainTextResponse:
    """What Ollama answers on its root: clients probe it to find the server."""
    return PlainTextResponse("Ollama is running")


@router.api_route("/version", methods=["GET", "HEAD"])
async def version() -> dict[str, str]:
    """The Ollama API version followed, and gpuguard's own as an extra field."""
    return {"version": OLLAMA_API_VERSION, "gpuguard": __version__}


@router.post("/chat", response_model=None)
async def chat(body: OllamaChatRequest, context: Context) -> Response:
    """Answer a chat (NDJSON stream by default), holding the GPU for the whole answer."""
    return await _answer(body, body.chat_messages(), CHAT, context, load_only=not body.messages)


@router.post("/generate", response_model=None)
async def generate(body: GenerateRequest, context: Context) -> Response:
    """Complete a prompt (NDJSON stream by default), holding the GPU for the whole answer."""
    return await _answer(body, body.chat_messages(), GENERATE, context, load_only=not body.prompt)


async def _answer(
    body: OllamaChatRequest | GenerateRequest,
    messages: list[ChatMessage],
    shape: Shape,
    context: ServerContext,
    *,
    load_only: bool,
) -> Response:
    parameters = chat_parameters(body.options)
    unload_after = body.keep_alive_s == 0
    gateway = context.gateway
    model = await resolve_model(gateway, body.model)
    if load_only:
        reason = await _load_or_unload(gateway, model, unload=unload_after)
        return JSONResponse(shape.payload(body.model, "", done=True, done_reason=reason))
    timing = Timing()
    stream = gateway.chat(messages, model=model, options=parameters.options())
    first = await _first_item(stream)
    headers = _ignored_header(parameters.ignored)
    if body.stream:
        lines = _lines(shape, body.model, timing, first, stream, gateway, unload_after)
        response = _ClosingStreamingResponse(lines, media_type="application/x-ndjson")
        response.headers.update(headers)
        return response
    text = await _collect(timing, first, stream)
    if unload_after:
        await gateway.unload(model)
    payload = shape.payload(body.model, text, done=True, **timing.final_fields())
    return JSONResponse(payload, headers=headers)


def _ignored_header(ignored: tuple[str, ...]) -> dict[str, str]:
    """Options the server's configuration decides, named back to the client."""
    return {"X-Gpuguard-Ignored-Options": ",".join(ignored)} if ignored else {}


async def _load_or_unload(gateway: ModelGateway, model: str, *, unload: bool) -> str:
    """What an empty chat or prompt asks for; returns Ollama's ``done_reason``."""
    if unload:
        await gateway.unload(model)
        return "unload"
    await gateway.load(model)
    return "load"


async def _lines(
    shape: Shape,
    model: str,
    timing: Timing,
    first: ChatChunk | GpuWaiting | None,
    stream: ChatStream,
    gateway: ModelGateway,
    unload_after: bool,
) -> AsyncGenerator[str, None]:
    try:
        async with aclosing(stream):
            async for item in _items(first, stream):
                if isinstance(item, ChatChunk):
                    timing.record(item)
                payload = answer_item(shape, model, item)
                if payload is not None:
                    yield line(payload)
        yield line(shape.payload(model, "", done=True, **timing.final_fields()))
        if unload_after:
            await gateway.unload(model)
    except GpuGuardError as exc:
        # The status line went out with the first line: Ollama reports later errors as a
        # last ``{"error": ...}`` line, and its clients raise on it.
        yield line(ollama_error(exc))


async def _collect(timing: Timing, first: ChatChunk | GpuWaiting | None, stream: ChatStream) -> str:
    parts = []
    async with aclosing(stream):
        async for item in _items(first, stream):
            if isinstance(item, ChatChunk):
                timing.record(item)
                parts.append(item.content)
    return "".join(parts)


@router.post("/embed")
async def embed(body: EmbedRequest, context: Context, response: Response) -> dict[str, Any]:
    """Embed one text or many with the configured embedder (on the GPU under the lease)."""
    response.headers.update(_ignored_header(body.check_supported()))
    started = time.perf_counter_ns()
    model = _embedder(context.gateway, body.model)
    texts = body.texts
    vectors = await context.gateway.embed(texts) if texts else None
    return {
        "model": body.model,
        "embeddings": [] if vectors is None else [[float(x) for x in row] for row in vectors],
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": 0,
        "prompt_eval_count": sum(len(text.split()) for text in texts),
        "gpuguard": {"embedder": model},
    }


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingsRequest, context: Context, response: Response
) -> dict[str, Any]:
    """The older single-text form: ``{"embedding": [...]}`` (empty for an empty prompt)."""
    response.headers.update(_ignored_header(body.check_supported()))
    _embedder(context.gateway, body.model)
    if not body.prompt:
        return {"embedding": []}
    vectors = await context.gateway.embed([body.prompt])
    return {"embedding": [float(x) for x in vectors[0]]}


def _embedder(gateway: ModelGateway, name: str) -> str:
    names = embedder_names(gateway)
    if name not in names:
        raise ModelNotFound(
            f'model "{name}" not found: this server embeds with {sorted(set(names.values()))}',
            backend="gpuguard",
            model=name,
        )
    return names[name]
