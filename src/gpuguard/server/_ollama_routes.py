"""Ollama's native API in front of any backend: chat, generate, embeddings, version.

Every GPU operation goes through the gateway, as for the OpenAI routes: ``/api/chat`` and
``/api/generate`` stream through :meth:`ModelGateway.chat`, which holds the interactive
lease for the whole answer; an empty conversation or prompt loads the model
(:meth:`ModelGateway.load`) and, with ``keep_alive: 0``, unloads it
(:meth:`ModelGateway.unload`), both under the lease. Embeddings go through
:meth:`ModelGateway.embed_request`, which schedules them by their size. ``load_duration``
is the time this request spent loading a model (0 when it was loaded already).

When the GPU is busy, a stream's first line is an otherwise empty answer object
(``"done": false`` and no text) with an extra ``gpuguard`` field carrying the "Waiting for
GPU..." notice; Ollama clients add its empty text and ignore the field.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .. import __version__
from .._exceptions import GpuGuardError, ModelNotFound, UnsupportedParameter
from ..gateway import GpuWaiting, ModelGateway
from ..llm import ChatChunk, ChatMessage
from . import _ollama_models
from ._catalog import refuse_chat_with_embedder
from ._context import ServerContext, get_context
from ._dimensions import shorten
from ._errors import ollama_error
from ._ollama_models import embedder_names, resolve_model
from ._ollama_schemas import (
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    OllamaChatRequest,
)
from ._ollama_wire import CHAT, GENERATE, Shape, Timing, answer_item, line, ollama_tool_calls
from ._openai_payloads import Answer
from ._streaming import ChatStream, ClosingStreamingResponse, first_item, items

__all__ = ["OLLAMA_API_VERSION", "root_router", "router"]

#: The Ollama release whose API these routes follow; clients check it for features.
OLLAMA_API_VERSION = "0.12.0"

router = APIRouter(prefix="/api", tags=["ollama"])
router.include_router(_ollama_models.router)

root_router = APIRouter(tags=["ollama"])
"""``GET /`` and ``HEAD /`` answering "Ollama is running", for the Ollama port."""

Context = Annotated[ServerContext, Depends(get_context)]


@root_router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def running() -> PlainTextResponse:
    """What Ollama answers on its root: clients probe it to find the server."""
    return PlainTextResponse("Ollama is running")


@router.get("/version")
async def version() -> dict[str, str]:
    """The Ollama API version followed, and gpuguard's own as an extra field."""
    return {"version": OLLAMA_API_VERSION, "gpuguard": __version__}


# HEAD answers as GET does (headers only); one route with both methods would give both
# the same OpenAPI operation id.
router.add_api_route("/version", version, methods=["HEAD"], include_in_schema=False)


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
    parameters = body.parameters()
    gateway = context.gateway
    refuse_chat_with_embedder(body.model, gateway, context.models)
    model = await resolve_model(gateway, body.model)
    reply = _Reply(shape, body.model, model, gateway, unload_after=body.keep_alive_s == 0)
    if load_only:
        reason = await _load_or_unload(gateway, model, unload=reply.unload_after)
        return JSONResponse(shape.payload(body.model, "", done=True, done_reason=reason))
    stream = gateway.chat(
        messages, model=model, options=parameters.options, on_load=reply.timing.record_load
    )
    try:
        first = await first_item(stream)
    except UnsupportedParameter as exc:
        raise parameters.in_ollama_terms(exc) from exc
    headers = _ignored_header(parameters.ignored)
    if body.stream:
        response = ClosingStreamingResponse(
            reply.lines(first, stream), media_type="application/x-ndjson"
        )
        response.headers.update(headers)
        return response
    return JSONResponse(await reply.whole(first, stream), headers=headers)


@dataclass(slots=True)
class _Reply:
    """One answer on its way to the client: ``name`` as the client asked, ``model`` resolved."""

    shape: Shape
    name: str
    model: str
    gateway: ModelGateway
    unload_after: bool
    timing: Timing = field(default_factory=Timing)
    answer: Answer = field(default_factory=Answer)

    async def lines(
        self, first: ChatChunk | GpuWaiting | None, stream: ChatStream
    ) -> AsyncGenerator[str, None]:
        """The NDJSON stream: text as it comes, tool calls whole, then the final object."""
        try:
            async with aclosing(stream):
                async for item in items(first, stream):
                    if isinstance(item, ChatChunk):
                        self._add(item)
                    payload = answer_item(self.shape, self.name, item)
                    if payload is not None:
                        yield line(payload)
            calls = self._tool_calls()
            if calls:
                # Ollama sends each tool call whole, on a line of its own before the last.
                yield line(self.shape.payload(self.name, "", done=False, tool_calls=calls))
            yield line(self.shape.payload(self.name, "", done=True, **self.timing.final_fields()))
            if self.unload_after:
                await self.gateway.unload(self.model)
        except GpuGuardError as exc:
            # The status line went out with the first line: Ollama reports later errors as a
            # last ``{"error": ...}`` line, and its clients raise on it.
            yield line(ollama_error(exc))

    async def whole(
        self, first: ChatChunk | GpuWaiting | None, stream: ChatStream
    ) -> dict[str, Any]:
        """The non-streamed answer object."""
        async with aclosing(stream):
            async for item in items(first, stream):
                if isinstance(item, ChatChunk):
                    self._add(item)
        calls = self._tool_calls()
        if self.unload_after:
            await self.gateway.unload(self.model)
        return self.shape.payload(
            self.name, self.answer.text, done=True, tool_calls=calls, **self.timing.final_fields()
        )

    def _add(self, chunk: ChatChunk) -> None:
        self.timing.record(chunk)
        self.answer.add(chunk)

    def _tool_calls(self) -> list[dict[str, Any]]:
        return ollama_tool_calls(self.answer, backend=self.gateway.backend.kind, model=self.model)


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


@router.post("/embed")
async def embed(body: EmbedRequest, context: Context, response: Response) -> dict[str, Any]:
    """Embed one text or many with the configured embedder, scheduled by the request's size.

    ``dimensions`` shortens the vectors as ``/v1/embeddings`` does (one implementation).
    """
    response.headers.update(_ignored_header(body.check_supported()))
    started = time.perf_counter_ns()
    model = _embedder(context.gateway, body.model)
    texts = body.texts
    answer = await context.gateway.embed_request(texts) if texts else None
    vectors = [] if answer is None else shorten(answer.vectors, body.dimensions).tolist()
    return {
        "model": body.model,
        "embeddings": vectors,
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": 0 if answer is None else answer.load_ns,
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
    answer = await context.gateway.embed_request([body.prompt])
    return {"embedding": [float(x) for x in answer.vectors[0]]}


def _embedder(gateway: ModelGateway, name: str) -> str:
    names = embedder_names(gateway)
    if name not in names:
        raise ModelNotFound(
            f'model "{name}" not found: this server embeds with {sorted(set(names.values()))}',
            backend="gpuguard",
            model=name,
        )
    return names[name]
