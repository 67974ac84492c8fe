"""llama-server (router and single-model), vLLM sleep mode and LM Studio against small
doubles of their documented model-management APIs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuguard import BackendError, ModelLoadFailed, ModelNotFound
from gpuguard.llm import (
    LlamaServerBackend,
    LlmBackend,
    LmStudioBackend,
    LoadedModel,
    Timeouts,
    VllmBackend,
)
from gpuguard.testing import IntervalRecorder
from gpuguard.testing._served_double import ServedDouble


def openai_error(status: int, message: str, kind: str) -> Response:
    return JSONResponse(
        {"error": {"code": status, "message": message, "type": kind}}, status_code=status
    )


# --- llama-server, router mode -----------------------------------------------------------


class RouterDouble(ServedDouble):
    """llama-server started without --model: /models with status.value, asynchronous
    POST /models/load and /models/unload answering {"success": true}."""

    name = "llama-router-double"

    def __init__(self, recorder: IntervalRecorder) -> None:
        super().__init__(recorder=recorder)
        self.status: dict[str, dict[str, Any]] = {
            "ggml-org/gemma-3-1b-it-GGUF:Q4_K_M": {"value": "unloaded"},
            "ggml-org/Qwen3-0.6B-GGUF:Q8_0": {"value": "unloaded"},
        }
        self.broken: set[str] = set()
        self.load_gate = threading.Event()
        self.load_gate.set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_later(self, model: str) -> None:
        await asyncio.to_thread(self.load_gate.wait)
        with self.gpu_work(f"load {model}"):
            await asyncio.sleep(0)  # the load happens after the 200 answer
        args = ["llama-server", "-ctx", "4096"]
        if model in self.broken:
            self.status[model] = {"value": "unloaded", "args": args, "failed": True, "exit_code": 1}
        else:
            self.status[model] = {"value": "loaded", "args": args}

    async def _unload_later(self, model: str) -> None:
        with self.gpu_work(f"unload {model}"):
            await asyncio.sleep(0)
        self.status[model] = {"value": "unloaded"}

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _models(self, request: Request) -> Response:
        data = [
            {"id": model, "path": f"/cache/{model}.gguf", "status": dict(status)}
            for model, status in self.status.items()
        ]
        return JSONResponse({"data": data})

    async def _load(self, request: Request) -> Response:
        model = (await request.json())["model"]
        if model not in self.status:
            return openai_error(404, "model not found", "not_found_error")
        if self.status[model]["value"] in ("loading", "loaded"):
            return openai_error(400, "model is already running", "invalid_request_error")
        self.status[model] = {"value": "loading", "args": ["llama-server"]}
        self._spawn(self._load_later(model))
        return JSONResponse({"success": True})

    async def _unload(self, request: Request) -> Response:
        model = (await request.json())["model"]
        if self.status.get(model, {}).get("value") != "loaded":
            return openai_error(400, "model is not running", "invalid_request_error")
        self._spawn(self._unload_later(model))
        return JSONResponse({"success": True})

    def _routes(self) -> list[Route]:
        return [
            Route("/health", self._health),
            Route("/models", self._models),
            Route("/v1/models", self._models),
            Route("/models/load", self._load, methods=["POST"]),
            Route("/models/unload", self._unload, methods=["POST"]),
        ]


GEMMA = "ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"
QWEN = "ggml-org/Qwen3-0.6B-GGUF:Q8_0"


@pytest.fixture
def router(recorder: IntervalRecorder) -> Iterator[RouterDouble]:
    with RouterDouble(recorder) as double:
        yield double


@pytest.fixture
async def router_backend(
    router: RouterDouble, timeouts: Timeouts
) -> AsyncIterator[LlamaServerBackend]:
    backend = LlamaServerBackend(router.base_url, timeouts=timeouts)
    yield backend
    await backend.aclose()


async def test_router_load_and_unload_wait_for_status(
    router_backend: LlamaServerBackend, router: RouterDouble
) -> None:
    assert isinstance(router_backend, LlmBackend)
    assert (await router_backend.health()).ok
    assert await router_backend.list_models() == [GEMMA, QWEN]
    assert router_backend.router_mode is True

    await router_backend.load(GEMMA)
    assert router.status[GEMMA]["value"] == "loaded"  # load returned only once loaded
    [loaded] = await router_backend.loaded_models()
    assert loaded.id == GEMMA

    await router_backend.unload(GEMMA)
    assert router.status[GEMMA]["value"] == "unloaded"
    await router_backend.unload(GEMMA)  # not loaded: a no-op
    assert router.requests.count("POST /models/unload") == 1


async def test_router_already_running_is_not_an_error(
    router_backend: LlamaServerBackend, router: RouterDouble
) -> None:
    router.load_gate.clear()
    async with httpx.AsyncClient(base_url=router.base_url) as raw:
        await raw.post("/models/load", json={"model": QWEN})  # someone else started a load
    polls = router.requests.count("GET /models")
    loading = asyncio.create_task(router_backend.load(QWEN))
    await asyncio.to_thread(router.wait_for_requests, "GET /models", polls + 2)
    assert not loading.done()  # the gate holds the load: still "loading"
    router.load_gate.set()
    await loading
    assert router.requests.count("POST /models/load") == 2  # the second got "already running"
    assert router.status[QWEN]["value"] == "loaded"


async def test_router_failed_load_raises(
    router_backend: LlamaServerBackend, router: RouterDouble
) -> None:
    router.broken.add(GEMMA)
    with pytest.raises(ModelLoadFailed, match="process exited"):
        await router_backend.load(GEMMA)


async def test_router_unknown_model(router_backend: LlamaServerBackend) -> None:
    with pytest.raises(ModelNotFound, match="no-such-model"):
        await router_backend.load("no-such-model")


# --- llama-server, single-model mode -----------------------------------------------------


class SingleDouble(ServedDouble):
    """llama-server started with --model: 503 "Loading model" until ``ready`` is set.

    ``GET /slots`` lists two slots (``processing`` says which are busy) and
    ``POST /slots/{id}?action=erase`` answers as the server README documents; with
    ``slots_endpoint`` off (``--no-slots``) both answer 501.
    """

    name = "llama-single-double"

    def __init__(self, *, slots_endpoint: bool = True) -> None:
        super().__init__(recorder=None)
        self.ready = threading.Event()
        self.slots_endpoint = slots_endpoint
        self.processing: set[int] = set()
        self.erased: list[int] = []

    def _no_slots(self) -> Response:
        return openai_error(
            501, "This server does not support slots endpoint.", "not_supported_error"
        )

    async def _slots(self, request: Request) -> Response:
        if not self.slots_endpoint:
            return self._no_slots()
        return JSONResponse(
            [
                {
                    "id": slot,
                    "id_task": 100 + slot if slot in self.processing else -1,
                    "n_ctx": 4096,
                    "is_processing": slot in self.processing,
                    "params": {"temperature": 0.8, "n_predict": -1},
                    "next_token": {"has_next_token": slot in self.processing, "n_decoded": 12},
                }
                for slot in (0, 1)
            ]
        )

    async def _slot_action(self, request: Request) -> Response:
        if not self.slots_endpoint:
            return self._no_slots()
        slot = int(request.path_params["id_slot"])
        if request.query_params.get("action") != "erase":
            return openai_error(400, "Invalid action", "invalid_request_error")
        self.erased.append(slot)
        return JSONResponse({"id_slot": slot, "n_erased": 42})

    async def _guarded(self, request: Request) -> Response:
        if not self.ready.is_set():
            return openai_error(503, "Loading model", "unavailable_error")
        if request.url.path == "/health":
            return JSONResponse({"status": "ok"})
        model = {"id": "tiny.gguf", "object": "model", "owned_by": "llamacpp", "meta": {}}
        return JSONResponse({"object": "list", "data": [model]})

    def _routes(self) -> list[Route]:
        return [
            *(Route(path, self._guarded) for path in ("/health", "/models", "/v1/models")),
            Route("/slots", self._slots),
            Route("/slots/{id_slot:int}", self._slot_action, methods=["POST"]),
        ]


async def test_single_model_load_waits_for_health(timeouts: Timeouts) -> None:
    with SingleDouble() as double:
        backend = LlamaServerBackend(double.base_url, timeouts=timeouts)
        health = await backend.health()
        assert not health.ok
        assert "Loading model" in health.detail
        polls = double.requests.count("GET /health")
        loading = asyncio.create_task(backend.load("tiny.gguf"))
        await asyncio.to_thread(double.wait_for_requests, "GET /health", polls + 2)
        assert not loading.done()
        double.ready.set()
        await loading
        assert backend.router_mode is False
        assert await backend.loaded_models() == [LoadedModel(id="tiny.gguf")]
        with pytest.raises(ModelNotFound):
            await backend.load("other.gguf")
        with pytest.raises(BackendError, match="no unload API"):
            await backend.unload("tiny.gguf")
        await backend.aclose()


# --- vLLM sleep mode ---------------------------------------------------------------------


class VllmDouble(ServedDouble):
    """vLLM with --enable-sleep-mode (and VLLM_SERVER_DEV_MODE=1 unless ``dev_mode`` is off)."""

    name = "vllm-double"
    model = "meta-llama/Llama-3.2-1B-Instruct"

    def __init__(self, recorder: IntervalRecorder, *, dev_mode: bool = True) -> None:
        super().__init__(recorder=recorder)
        self.dev_mode = dev_mode
        self.sleeping = False
        self.sleep_levels: list[str] = []

    async def _health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def _models(self, request: Request) -> Response:
        model = {"id": self.model, "object": "model", "owned_by": "vllm", "max_model_len": 4096}
        return JSONResponse({"object": "list", "data": [model]})

    async def _is_sleeping(self, request: Request) -> Response:
        return JSONResponse({"is_sleeping": self.sleeping})

    async def _sleep(self, request: Request) -> Response:
        self.sleep_levels.append(request.query_params["level"])
        with self.gpu_work("sleep"):
            await asyncio.sleep(0)
            self.sleeping = True
        return Response(status_code=200)

    async def _wake_up(self, request: Request) -> Response:
        with self.gpu_work("wake_up"):
            await asyncio.sleep(0)
            self.sleeping = False
        return Response(status_code=200)

    def _routes(self) -> list[Route]:
        routes = [
            Route("/health", self._health),
            Route("/v1/models", self._models),
        ]
        if self.dev_mode:
            routes += [
                Route("/is_sleeping", self._is_sleeping),
                Route("/sleep", self._sleep, methods=["POST"]),
                Route("/wake_up", self._wake_up, methods=["POST"]),
            ]
        return routes


async def test_vllm_unload_sleeps_and_load_wakes_up(
    recorder: IntervalRecorder, timeouts: Timeouts
) -> None:
    with VllmDouble(recorder) as double:
        backend = VllmBackend(double.base_url, timeouts=timeouts, sleep_level=2)
        assert (await backend.health()).ok
        assert [m.id for m in await backend.loaded_models()] == [VllmDouble.model]

        await backend.load(VllmDouble.model)  # awake already: nothing to do
        await backend.unload(VllmDouble.model)
        assert double.sleeping
        assert double.sleep_levels == ["2"]
        assert "POST /sleep?level=2&mode=wait" in double.requests
        assert await backend.loaded_models() == []
        await backend.unload(VllmDouble.model)  # asleep already

        await backend.load(VllmDouble.model)
        assert not double.sleeping
        assert [i.what for i in recorder.intervals] == ["sleep", "wake_up"]
        with pytest.raises(ModelNotFound):
            await backend.load("other-model")
        await backend.aclose()


async def test_vllm_without_sleep_mode_says_how_to_enable_it(
    recorder: IntervalRecorder, timeouts: Timeouts
) -> None:
    with VllmDouble(recorder, dev_mode=False) as double:
        backend = VllmBackend(double.base_url, timeouts=timeouts)
        with pytest.raises(BackendError, match="enable-sleep-mode"):
            await backend.unload(VllmDouble.model)
        await backend.aclose()


# --- LM Studio ---------------------------------------------------------------------------


class LmStudioDouble(ServedDouble):
    """LM Studio's REST API v1: a repeated load makes another instance (``key:2``)."""

    name = "lmstudio-double"

    def __init__(self, recorder: IntervalRecorder) -> None:
        super().__init__(recorder=recorder)
        self.instances: dict[str, list[str]] = {"qwen/qwen3-4b": [], "google/gemma-3-1b": []}

    async def _models(self, request: Request) -> Response:
        models = [
            {
                "type": "llm",
                "publisher": key.split("/")[0],
                "key": key,
                "display_name": key,
                "size_bytes": 2_000_000_000,
                "loaded_instances": [
                    {"id": instance, "config": {"context_length": 4096}} for instance in ids
                ],
                "max_context_length": 32768,
                "format": "gguf",
            }
            for key, ids in self.instances.items()
        ]
        return JSONResponse({"models": models})

    async def _load(self, request: Request) -> Response:
        key = (await request.json())["model"]
        if key not in self.instances:
            return openai_error(404, f"Model {key} not found", "model_not_found")
        with self.gpu_work(f"load {key}"):
            await asyncio.sleep(0)
            count = len(self.instances[key])
            instance = key if count == 0 else f"{key}:{count + 1}"
            self.instances[key].append(instance)
        return JSONResponse(
            {"type": "llm", "instance_id": instance, "load_time_seconds": 0.01, "status": "loaded"}
        )

    async def _unload(self, request: Request) -> Response:
        instance = (await request.json())["instance_id"]
        for ids in self.instances.values():
            if instance in ids:
                with self.gpu_work(f"unload {instance}"):
                    ids.remove(instance)
                return JSONResponse({"instance_id": instance})
        return openai_error(404, f"No loaded instance {instance}", "not_found")

    def _routes(self) -> list[Route]:
        return [
            Route("/api/v1/models", self._models),
            Route("/api/v1/models/load", self._load, methods=["POST"]),
            Route("/api/v1/models/unload", self._unload, methods=["POST"]),
        ]


async def test_lmstudio_loads_once_and_unloads_every_instance(
    recorder: IntervalRecorder, timeouts: Timeouts
) -> None:
    with LmStudioDouble(recorder) as double:
        backend = LmStudioBackend(double.base_url, api_key="lm-key", timeouts=timeouts)
        assert (await backend.health()).ok
        assert await backend.list_models() == ["google/gemma-3-1b", "qwen/qwen3-4b"]

        await backend.load("qwen/qwen3-4b")
        await backend.load("qwen/qwen3-4b")  # checked first: no second instance
        assert double.instances["qwen/qwen3-4b"] == ["qwen/qwen3-4b"]

        async with httpx.AsyncClient(base_url=double.base_url) as raw:  # another client
            await raw.post("/api/v1/models/load", json={"model": "qwen/qwen3-4b"})
        [loaded] = await backend.loaded_models()
        assert loaded.details["instance_ids"] == ["qwen/qwen3-4b", "qwen/qwen3-4b:2"]

        await backend.unload("qwen/qwen3-4b")
        assert double.instances["qwen/qwen3-4b"] == []
        assert await backend.loaded_models() == []
        with pytest.raises(ModelNotFound):
            await backend.load("no/such-model")
        await backend.aclose()
