"""A protocol double of Ollama's native API, quirks included.

``POST /api/generate`` without a prompt loads a model (``done_reason: "load"``); with
``keep_alive: 0`` it answers at once (``done_reason: "unload"``) and the model leaves
``/api/ps`` only later (the unload is asynchronous). ``/api/chat`` streams NDJSON and
loads the model on demand; an error can arrive as a ``{"error": ...}`` line under status
200. A busy server answers 503. ``/api/tags``, ``/api/ps`` (``size_vram``,
``expires_at``), ``/api/embed`` and ``/api/version`` follow the documented shapes; errors
are ``{"error": "..."}``; ``llama3.2`` means ``llama3.2:latest``.

Model management: ``/api/show`` (``model`` or the older ``name``), ``/api/pull`` and
``/api/create`` (progress as NDJSON status lines ending in ``success``, or only that last
object with ``stream: false``; an unknown model to pull is an ``{"error": ...}`` line),
``DELETE /api/delete`` and ``/api/copy`` (200 with an empty body, 404 for an unknown model).

Load, unload, chat (the whole stream), generation and embeddings are recorded as GPU work.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .._intervals import IntervalRecorder
from ._served_double import ServedDouble, fake_tokens, fake_vector

__all__ = ["OllamaDouble"]

_BUSY = "server busy, please try again.  maximum pending requests exceeded"
_DEFAULT_KEEP_ALIVE_S = 300.0
_FOREVER = dt.datetime(2318, 1, 1, tzinfo=dt.UTC)


def _canonical(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _keep_alive_seconds(value: Any) -> float:
    """Ollama's keep_alive: a number of seconds or a duration such as ``"5m"``."""
    if value is None:
        return _DEFAULT_KEEP_ALIVE_S
    if isinstance(value, int | float):
        return float(value)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in sorted(units, key=len, reverse=True):
        if str(value).endswith(unit):
            return float(str(value)[: -len(unit)]) * units[unit]
    return float(value)


class OllamaDouble(ServedDouble):
    """Ollama over real HTTP.

    ``models`` maps each pulled model to its size in bytes (a sequence gives 1 GiB each).
    Settable while running: ``busy`` (every generate/chat/embed answers 503),
    ``fail_stream_after`` (the next chat sends that many tokens, then an error line) and
    ``unload_gate`` (clear it to hold asynchronous unloads until it is set again).
    ``keep_alives`` logs ``(route, keep_alive)`` for every request that carried one.
    """

    name = "ollama-double"

    def __init__(
        self,
        *,
        models: Mapping[str, int] | Sequence[str] = ("llama3.2:latest", "nomic-embed-text:latest"),
        load_latency_s: float = 0.0,
        unload_latency_s: float = 0.0,
        token_latency_s: float = 0.0,
        embedding_dimension: int = 16,
        recorder: IntervalRecorder | None = None,
    ) -> None:
        super().__init__(recorder=recorder)
        sizes = models if isinstance(models, Mapping) else dict.fromkeys(models, 1 << 30)
        self.models = {_canonical(name): size for name, size in sizes.items()}
        self.load_latency_s = load_latency_s
        self.unload_latency_s = unload_latency_s
        self.token_latency_s = token_latency_s
        self.embedding_dimension = embedding_dimension
        self.busy = False
        self.fail_stream_after: int | None = None
        self.unload_gate = threading.Event()
        self.unload_gate.set()
        self.keep_alives: list[tuple[str, Any]] = []
        #: Tokens sent by the most recent chat (to check that a closed stream stopped).
        self.tokens_sent = 0
        self._expires: dict[str, dt.datetime] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unloading: set[str] = set()

    @property
    def loaded(self) -> list[str]:
        """The models in memory (what ``/api/ps`` lists)."""
        return list(self._expires)

    #: Models ``/api/pull`` can fetch (anything else: "file does not exist").
    registry: tuple[str, ...] = ("tinyllama:latest",)

    # --- GPU work ------------------------------------------------------------------------

    def _keep(self, model: str, keep_alive: Any) -> None:
        seconds = _keep_alive_seconds(keep_alive)
        now = dt.datetime.now(dt.UTC)
        self._expires[model] = _FOREVER if seconds < 0 else now + dt.timedelta(seconds=seconds)

    async def _ensure_loaded(self, model: str, keep_alive: Any) -> None:
        if model not in self._expires:
            with self.gpu_work(f"load {model}"):
                await asyncio.sleep(self.load_latency_s)
        self._keep(model, keep_alive)

    async def _unload_later(self, model: str) -> None:
        await asyncio.to_thread(self.unload_gate.wait)
        with self.gpu_work(f"unload {model}"):
            await asyncio.sleep(self.unload_latency_s)
            self._expires.pop(model, None)
            self._unloading.discard(model)

    # --- routes --------------------------------------------------------------------------

    async def _root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": "0.12.0"})

    def _describe(self, model: str) -> dict[str, Any]:
        return {
            "name": model,
            "model": model,
            "size": self.models[model],
            "digest": hashlib.sha256(model.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "1B",
                "quantization_level": "Q4_K_M",
            },
        }

    async def _tags(self, request: Request) -> Response:
        models = [{**self._describe(m), "modified_at": _now()} for m in sorted(self.models)]
        return JSONResponse({"models": models})

    async def _ps(self, request: Request) -> Response:
        running = [
            {
                **self._describe(model),
                "expires_at": expires.isoformat(),
                "size_vram": self.models[model],
                "context_length": 4096,
            }
            for model, expires in self._expires.items()
        ]
        return JSONResponse({"models": running})

    async def _admit(self, request: Request, route: str) -> tuple[dict[str, Any], str] | Response:
        """Parse the body, log keep_alive, refuse when busy or the model is unknown."""
        body: dict[str, Any] = await request.json()
        if "keep_alive" in body:
            self.keep_alives.append((route, body["keep_alive"]))
        if self.busy:
            return _error(503, _BUSY)
        model = _canonical(str(body.get("model", "")))
        if model not in self.models:
            return _error(404, f'model "{body.get("model")}" not found, try pulling it first')
        return body, model

    async def _generate(self, request: Request) -> Response:
        admitted = await self._admit(request, "/api/generate")
        if isinstance(admitted, Response):
            return admitted
        body, model = admitted
        keep_alive = body.get("keep_alive")
        base = {"model": model, "created_at": _now(), "response": "", "done": True}
        if not body.get("prompt"):
            if keep_alive is not None and _keep_alive_seconds(keep_alive) == 0:
                if model in self._expires and model not in self._unloading:
                    self._unloading.add(model)
                    task = asyncio.create_task(self._unload_later(model))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                return JSONResponse({**base, "done_reason": "unload"})
            await self._ensure_loaded(model, keep_alive)
            return JSONResponse({**base, "done_reason": "load"})
        await self._ensure_loaded(model, keep_alive)
        tokens, finish = fake_tokens(
            str(body["prompt"]), body.get("options", {}).get("num_predict")
        )
        with self.gpu_work(f"generate {model}"):
            await asyncio.sleep(self.token_latency_s * len(tokens))
        return JSONResponse({**base, "response": "".join(tokens), "done_reason": finish})

    async def _chat(self, request: Request) -> Response:
        admitted = await self._admit(request, "/api/chat")
        if isinstance(admitted, Response):
            return admitted
        body, model = admitted
        await self._ensure_loaded(model, body.get("keep_alive"))
        messages = body.get("messages") or []
        prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        tokens, finish = fake_tokens(prompt, (body.get("options") or {}).get("num_predict"))
        fail_after, self.fail_stream_after = self.fail_stream_after, None
        if body.get("stream", True):
            lines = self._stream(model, tokens, finish, fail_after)
            return StreamingResponse(lines, media_type="application/x-ndjson")
        with self.gpu_work(f"chat {model}"):
            await asyncio.sleep(self.token_latency_s * len(tokens))
        message = {"role": "assistant", "content": "".join(tokens)}
        return JSONResponse(
            {
                "model": model,
                "created_at": _now(),
                "message": message,
                "done": True,
                "done_reason": finish,
                "eval_count": len(tokens),
            }
        )

    async def _stream(
        self, model: str, tokens: list[str], finish: str, fail_after: int | None
    ) -> AsyncIterator[str]:
        self.tokens_sent = 0
        with self.gpu_work(f"chat {model}"):
            for token in tokens[:fail_after]:
                await asyncio.sleep(self.token_latency_s)
                self.tokens_sent += 1
                message = {"role": "assistant", "content": token}
                line = {"model": model, "created_at": _now(), "message": message, "done": False}
                yield json.dumps(line) + "\n"
        # The last line goes out once the GPU work is over (see FoundryDouble._stream).
        if fail_after is not None and fail_after < len(tokens):
            yield json.dumps({"error": "an error was encountered while running the model"}) + "\n"
            return
        final = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": finish,
            "total_duration": 1000,
            "prompt_eval_count": 1,
            "eval_count": len(tokens),
        }
        yield json.dumps(final) + "\n"

    async def _embed(self, request: Request) -> Response:
        admitted = await self._admit(request, "/api/embed")
        if isinstance(admitted, Response):
            return admitted
        body, model = admitted
        await self._ensure_loaded(model, body.get("keep_alive"))
        texts: list[str] = [body["input"]] if isinstance(body["input"], str) else body["input"]
        with self.gpu_work(f"embed {model}"):
            await asyncio.sleep(self.token_latency_s)
            vectors = [fake_vector(text, self.embedding_dimension) for text in texts]
        return JSONResponse(
            {
                "model": model,
                "embeddings": vectors,
                "total_duration": 1000,
                "load_duration": 0,
                "prompt_eval_count": len(texts),
            }
        )

    # --- model management ----------------------------------------------------------------

    @staticmethod
    def _named(body: Mapping[str, Any]) -> str:
        return _canonical(str(body.get("model") or body.get("name") or ""))

    async def _show(self, request: Request) -> Response:
        model = self._named(await request.json())
        if model not in self.models:
            return _error(404, f"model '{model}' not found")
        described = self._describe(model)
        return JSONResponse(
            {
                "modelfile": f"FROM {model}\n",
                "parameters": f'{"num_ctx":<31}4096\n{"stop":<31}"</s>"',
                "template": "{{ .Prompt }}",
                "details": described["details"],
                "model_info": {"general.architecture": "llama", "llama.context_length": 4096},
                "capabilities": ["completion"],
                "modified_at": _now(),
            }
        )

    async def _progress(self, statuses: list[dict[str, Any]], stream: bool) -> Response:
        if not stream:
            return JSONResponse(statuses[-1])
        lines = "".join(json.dumps(status) + "\n" for status in statuses)
        return Response(lines, media_type="application/x-ndjson")

    async def _pull(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        model = self._named(body)
        stream = bool(body.get("stream", True))
        if model not in self.registry and model not in self.models:
            failure = {"error": "pull model manifest: file does not exist"}
            return await self._progress([{"status": "pulling manifest"}, failure], stream)
        layer = hashlib.sha256(model.encode()).hexdigest()
        total = 1 << 20
        self.models[model] = total
        return await self._progress(
            [
                {"status": "pulling manifest"},
                {"status": f"pulling {layer[:12]}", "digest": f"sha256:{layer}", "total": total},
                {
                    "status": f"pulling {layer[:12]}",
                    "digest": f"sha256:{layer}",
                    "total": total,
                    "completed": total,
                },
                {"status": "verifying sha256 digest"},
                {"status": "writing manifest"},
                {"status": "success"},
            ],
            stream,
        )

    async def _create(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        model = self._named(body)
        source = _canonical(str(body.get("from") or ""))
        if source not in self.models:
            return _error(400, f"base model '{source}' not found")
        self.models[model] = self.models[source]
        statuses = [{"status": "using existing layer"}, {"status": "writing manifest"}]
        return await self._progress([*statuses, {"status": "success"}], body.get("stream", True))

    async def _delete(self, request: Request) -> Response:
        model = self._named(await request.json())
        if self.models.pop(model, None) is None:
            return _error(404, f"model '{model}' not found")
        return Response(status_code=200)

    async def _copy(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        source = _canonical(str(body.get("source", "")))
        if source not in self.models:
            return _error(404, f"model '{source}' not found")
        self.models[_canonical(str(body.get("destination", "")))] = self.models[source]
        return Response(status_code=200)

    def _routes(self) -> list[Route]:
        return [
            Route("/", self._root),
            Route("/api/version", self._version),
            Route("/api/tags", self._tags),
            Route("/api/ps", self._ps),
            Route("/api/generate", self._generate, methods=["POST"]),
            Route("/api/chat", self._chat, methods=["POST"]),
            Route("/api/embed", self._embed, methods=["POST"]),
            Route("/api/show", self._show, methods=["POST"]),
            Route("/api/pull", self._pull, methods=["POST"]),
            Route("/api/create", self._create, methods=["POST"]),
            Route("/api/delete", self._delete, methods=["DELETE"]),
            Route("/api/copy", self._copy, methods=["POST"]),
        ]
