"""A protocol double of Foundry Local, both API generations, quirks included.

Legacy ``foundry service``: ``GET /openai/load/{name}?ttl=&ep=`` and
``GET /openai/unload/{name}?force=true`` answer 200 with an empty body,
``GET /openai/loadedmodels`` an array of ids, ``GET /openai/status`` the endpoints; chat
on an unloaded model loads it first. 0.10+ ``foundry server``: ``GET /models/load/{id}``
answers ``{"status": "loaded" | "already_loaded"}`` (404 unknown, 400 not cached),
``GET /models/unload/{id}`` ``{"status": "unloaded" | "not_loaded"}``,
``GET /models/loaded``, ``GET /status``; chat on an unloaded model is a 400 (no auto-load).
Both: ``/v1/models``, ``/v1/chat/completions`` (SSE, ending ``data: [DONE]``; an error may
arrive as a data frame) and ``/v1/embeddings``, with errors in the OpenAI shape.

Load, unload, chat (the whole stream) and embeddings are recorded as GPU work.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .._intervals import IntervalRecorder
from ._served_double import ServedDouble, fake_tokens, fake_vector

__all__ = ["FoundryDouble"]

Generation = Literal["legacy", "0.10"]
_EXECUTION_PROVIDERS = {"cpu", "cuda", "dml", "qnn", "webgpu"}


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


class FoundryDouble(ServedDouble):
    """Foundry Local over real HTTP, ``generation`` ``"legacy"`` or ``"0.10"``.

    ``catalogue`` is every model the service knows; ``cached`` (default: all of them) the
    downloaded ones. ``load_latency_s``, ``unload_latency_s`` and ``token_latency_s`` set
    how long the GPU work takes. ``fail_stream_after`` (settable) makes the next chat send
    that many tokens and then an error data frame.
    """

    name = "foundry-double"

    def __init__(
        self,
        *,
        generation: Generation = "0.10",
        catalogue: Sequence[str] = ("phi-4-mini", "qwen2.5-0.5b"),
        cached: Iterable[str] | None = None,
        load_latency_s: float = 0.0,
        unload_latency_s: float = 0.0,
        token_latency_s: float = 0.0,
        embedding_dimension: int = 16,
        recorder: IntervalRecorder | None = None,
    ) -> None:
        super().__init__(recorder=recorder)
        self.generation = generation
        self.catalogue = list(catalogue)
        self.cached = set(self.catalogue if cached is None else cached)
        self.load_latency_s = load_latency_s
        self.unload_latency_s = unload_latency_s
        self.token_latency_s = token_latency_s
        self.embedding_dimension = embedding_dimension
        self.fail_stream_after: int | None = None
        #: Tokens sent by the most recent chat (to check that a closed stream stopped).
        self.tokens_sent = 0
        self._loaded: list[str] = []

    @property
    def loaded(self) -> list[str]:
        """The loaded models, in load order."""
        return list(self._loaded)

    # --- GPU work ------------------------------------------------------------------------

    async def _load(self, model: str) -> None:
        with self.gpu_work(f"load {model}"):
            await asyncio.sleep(self.load_latency_s)
            self._loaded.append(model)

    async def _unload(self, model: str) -> None:
        with self.gpu_work(f"unload {model}"):
            await asyncio.sleep(self.unload_latency_s)
            self._loaded.remove(model)

    # --- legacy routes -------------------------------------------------------------------

    async def _legacy_status(self, request: Request) -> Response:
        return JSONResponse(
            {
                "Endpoints": [self.base_url],
                "ModelDirPath": "/tmp/foundry-double/models",
                "PipeName": "inference_agent",
            }
        )

    async def _legacy_loaded(self, request: Request) -> Response:
        return JSONResponse(self.loaded)

    async def _legacy_load(self, request: Request) -> Response:
        model = request.path_params["name"]
        ep = request.query_params.get("ep")
        if ep is not None and ep not in _EXECUTION_PROVIDERS:
            return _error(400, f"Unsupported execution provider {ep!r}", "invalid_ep")
        if model not in self.catalogue:
            return _error(404, f"Model {model!r} not found in the catalog", "model_not_found")
        if model not in self.cached:
            return _error(500, f"Model {model!r} is not downloaded", "load_failed", "server_error")
        if model not in self._loaded:
            await self._load(model)
        return Response(status_code=200)  # the quirk: success is an empty body

    async def _legacy_unload(self, request: Request) -> Response:
        model = request.path_params["name"]
        if model not in self.catalogue:
            return _error(404, f"Model {model!r} not found in the catalog", "model_not_found")
        if model in self._loaded:
            await self._unload(model)
        return Response(status_code=200)

    # --- 0.10+ routes --------------------------------------------------------------------

    async def _status(self, request: Request) -> Response:
        return JSONResponse({"status": "running", "endpoints": [self.base_url]})

    async def _loaded_route(self, request: Request) -> Response:
        return JSONResponse(self.loaded)

    async def _model_load(self, request: Request) -> Response:
        model = request.path_params["id"]
        if model not in self.catalogue:
            return _error(404, f"Model {model!r} not found in the catalog", "model_not_found")
        if model not in self.cached:
            message = f"Model {model!r} is not cached; download it with `foundry model download`"
            return _error(400, message, "model_not_cached")
        if model in self._loaded:
            return JSONResponse({"status": "already_loaded"})
        await self._load(model)
        return JSONResponse({"status": "loaded"})

    async def _model_unload(self, request: Request) -> Response:
        model = request.path_params["id"]
        if model not in self.catalogue:
            return _error(404, f"Model {model!r} not found in the catalog", "model_not_found")
        if model not in self._loaded:
            return JSONResponse({"status": "not_loaded"})
        await self._unload(model)
        return JSONResponse({"status": "unloaded"})

    # --- OpenAI routes -------------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        data = [{"id": m, "object": "model", "owned_by": "foundry"} for m in sorted(self.cached)]
        return JSONResponse({"object": "list", "data": data})

    async def _ready(self, model: str) -> Response | None:
        """Check ``model`` can serve, loading it on demand on the legacy service."""
        if model not in self.catalogue:
            return _error(404, f"The model `{model}` does not exist", "model_not_found")
        if model in self._loaded:
            return None
        if self.generation == "0.10":
            message = f"Model '{model}' is not loaded. Load it first with GET /models/load/{model}"
            return _error(400, message, "model_not_loaded")
        if model not in self.cached:
            return _error(500, f"Model {model!r} is not downloaded", "load_failed", "server_error")
        await self._load(model)
        return None

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model"))
        refused = await self._ready(model)
        if refused is not None:
            return refused
        prompt = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        tokens, finish = fake_tokens(prompt, body.get("max_tokens"))
        fail_after, self.fail_stream_after = self.fail_stream_after, None
        if body.get("stream"):
            events = self._stream(model, tokens, finish, fail_after)
            return StreamingResponse(events, media_type="text/event-stream")
        with self.gpu_work(f"chat {model}"):
            await asyncio.sleep(self.token_latency_s * len(tokens))
        return JSONResponse(
            {
                "id": "chatcmpl-double",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": finish,
                    }
                ],
                "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(tokens)},
            }
        )

    async def _stream(
        self, model: str, tokens: list[str], finish: str, fail_after: int | None
    ) -> AsyncIterator[str]:
        def frame(delta: dict[str, str], finish_reason: str | None = None) -> str:
            chunk = {
                "id": "chatcmpl-double",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            return f"data: {json.dumps(chunk)}\n\n"

        self.tokens_sent = 0
        with self.gpu_work(f"chat {model}"):
            yield frame({"role": "assistant"})
            for token in tokens[:fail_after]:
                await asyncio.sleep(self.token_latency_s)
                self.tokens_sent += 1
                yield frame({"content": token})
        # The last frame goes out once the GPU work is over, so a client that has read it
        # may start other GPU work at once.
        if fail_after is not None and fail_after < len(tokens):
            error = {"error": {"message": "inference failed", "type": "server_error"}}
            yield f"data: {json.dumps(error)}\n\n"
            return
        yield frame({}, finish)
        yield "data: [DONE]\n\n"

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model"))
        refused = await self._ready(model)
        if refused is not None:
            return refused
        texts: list[str] = [body["input"]] if isinstance(body["input"], str) else body["input"]
        with self.gpu_work(f"embeddings {model}"):
            await asyncio.sleep(self.token_latency_s)
            data: list[dict[str, Any]] = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": fake_vector(text, self.embedding_dimension),
                }
                for i, text in enumerate(texts)
            ]
        return JSONResponse({"object": "list", "data": data, "model": model})

    def _routes(self) -> list[Route]:
        shared = [
            Route("/v1/models", self._models),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
        ]
        if self.generation == "legacy":
            return [
                Route("/openai/status", self._legacy_status),
                Route("/openai/loadedmodels", self._legacy_loaded),
                Route("/openai/load/{name}", self._legacy_load),
                Route("/openai/unload/{name}", self._legacy_unload),
                *shared,
            ]
        return [
            Route("/status", self._status),
            Route("/models/loaded", self._loaded_route),
            Route("/models/load/{id}", self._model_load),
            Route("/models/unload/{id}", self._model_unload),
            *shared,
        ]
