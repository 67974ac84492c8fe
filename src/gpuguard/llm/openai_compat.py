"""OpenAI-compatible servers.

Any plain one, llama.cpp's ``llama-server`` (single-model and router mode), vLLM (sleep
mode as unload, wake-up as load) and LM Studio (REST v1).

They share chat, embeddings and the HTTP client (:class:`OpenAIServerBase`); each class
adds only how its server lists, loads and unloads models.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from .._exceptions import (
    BackendError,
    BackendProtocolError,
    ConfigError,
    ModelLoadFailed,
    ModelNotFound,
)
from ._http import HttpClient, poll_until
from ._openai_wire import OpenAIServerBase, list_model_ids
from ._protocol import BackendHealth, LoadedModel
from ._timeouts import Timeouts

__all__ = ["LlamaServerBackend", "LmStudioBackend", "OpenAICompatBackend", "VllmBackend"]


class OpenAICompatBackend(OpenAIServerBase):
    """A plain OpenAI-compatible server (``python -m llama_cpp.server``, a proxy, ...).

    It serves the models ``/v1/models`` lists and cannot load or unload: :meth:`load`
    checks the model is served (:class:`ModelNotFound` otherwise) and :meth:`unload`
    raises :class:`BackendError`. :meth:`abort` can only close the requests in flight.
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key=api_key, timeouts=timeouts, transport=transport)
        self._connect(base_url)

    @property
    def http(self) -> HttpClient:
        """The client (always connected: the base URL is given)."""
        assert self._http is not None
        return self._http

    def _not_found(self, model: str, served: list[str]) -> ModelNotFound:
        return ModelNotFound(
            f"{self.kind}: {self.http.base_url} does not serve {model!r} (it serves {served})",
            backend=self.kind,
            model=model,
            url=self.http.base_url,
        )

    async def health(self) -> BackendHealth:
        """``GET /v1/models`` with the short health timeout."""
        return await self.http.probe("/v1/models")

    async def list_models(self) -> list[str]:
        """The ids ``/v1/models`` lists."""
        return await list_model_ids(self.http)

    async def loaded_models(self) -> list[LoadedModel]:
        """A plain server has every model it lists in memory."""
        return [LoadedModel(id=model) for model in await self.list_models()]

    async def _require_served(self, model: str) -> None:
        served = await self.list_models()
        if model not in served:
            raise self._not_found(model, served)

    def _cannot_unload(self, model: str) -> BackendError:
        return BackendError(
            f"{self.kind}: {self.http.base_url} has no unload API; stop the server to free "
            "its memory, or use llama-server's router mode, vLLM sleep mode or LM Studio",
            backend=self.kind,
            model=model,
            url=self.http.base_url,
        )

    async def load(self, model: str) -> None:
        """Check that ``model`` is served; there is nothing to load."""
        await self._require_served(model)

    async def unload(self, model: str) -> None:
        """Unsupported: a plain OpenAI-compatible server cannot unload."""
        raise self._cannot_unload(model)


def _router_status(entry: Mapping[str, Any]) -> tuple[str, bool, Any]:
    """``status.value`` of a router ``/models`` entry, whether it failed, and its args."""
    status = entry.get("status")
    if isinstance(status, Mapping):
        return str(status.get("value", "")), bool(status.get("failed")), status.get("args")
    return str(status or ""), False, None


class LlamaServerBackend(OpenAICompatBackend):
    """llama.cpp's ``llama-server``, in single-model or router mode (detected on first use).

    Single-model mode: the model loads at start (``/health`` is 503 meanwhile), so
    :meth:`load` waits for ``/health`` and :meth:`unload` is unsupported. Router mode
    (started without ``--model``): ``POST /models/load`` and ``/models/unload`` return
    before the work is done, so both poll ``GET /models`` for ``status.value``; "already
    running" on load is not an error. :meth:`abort` closes the requests in flight, then
    unloads (router) or waits for the slots to go idle and erases them (single-model).
    """

    kind = "llama-server"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeouts=timeouts, transport=transport)
        self._router: bool | None = None

    @property
    def router_mode(self) -> bool | None:
        """True in router mode, False in single-model mode, ``None`` until detected."""
        return self._router

    async def _catalogue(self) -> list[Mapping[str, Any]]:
        answer = await self.http.json(
            "GET", "/models", operation="list", timeout=self._timeouts.request_s
        )
        data = answer.get("data") if isinstance(answer, Mapping) else None
        if not isinstance(data, list):
            raise BackendProtocolError(
                f"llama-server: unexpected /models answer {answer!r:.200}",
                backend=self.kind,
                url=self.http.base_url,
            )
        # Router entries carry a status; a single-model server lists exactly one without.
        if self._router is None:
            self._router = not data or any("status" in entry for entry in data)
        return data

    async def _is_router(self) -> bool:
        if self._router is None:
            await self._catalogue()
        return bool(self._router)

    async def _state(self, model: str) -> tuple[str, bool]:
        catalogue = await self._catalogue()
        for entry in catalogue:
            if entry.get("id") == model:
                value, failed, _ = _router_status(entry)
                return value, failed
        raise self._not_found(model, [str(entry.get("id")) for entry in catalogue])

    async def health(self) -> BackendHealth:
        """``GET /health``: 503 while a single-model server is still loading."""
        return await self.http.probe("/health", accept=(503,))

    async def list_models(self) -> list[str]:
        """Router: the models it can load; single-model: the one model."""
        return [str(entry.get("id")) for entry in await self._catalogue()]

    async def loaded_models(self) -> list[LoadedModel]:
        """Router: entries whose ``status.value`` is ``loaded``; single: the model once up."""
        catalogue = await self._catalogue()
        if self._router:
            states = [(str(entry["id"]), _router_status(entry)) for entry in catalogue]
            return [
                LoadedModel(id=model, details={"args": args})
                for model, (value, _, args) in states
                if value == "loaded"
            ]
        up = (await self.health()).ok
        return [LoadedModel(id=str(entry["id"])) for entry in catalogue] if up else []

    async def load(self, model: str) -> None:
        """Router: load and wait for ``loaded``; single: wait for the model to be up."""
        # A single-model server answers 503 everywhere until its model is up.
        await self._wait(self._healthy, model, "the server to finish starting")
        if not await self._is_router():
            await self._require_served(model)
            return
        value, _ = await self._state(model)
        if value == "loaded":
            return
        response = await self.http.request(
            "POST",
            "/models/load",
            operation="load",
            timeout=self._timeouts.request_s,
            model=model,
            json_body={"model": model},
            accept=(400,),
        )
        if response.status_code == 400 and "already" not in response.text.lower():
            raise self.http.error_for_response(response, operation="load", model=model)
        await self._wait(lambda: self._reached(model, "loaded"), model, f"{model!r} to load")

    async def unload(self, model: str) -> None:
        """Router: unload and wait for ``unloaded``; single-model mode cannot unload."""
        if not await self._is_router():
            raise self._cannot_unload(model)
        value, _ = await self._state(model)
        if value in ("unloaded", ""):
            return
        await self.http.request(
            "POST",
            "/models/unload",
            operation="unload",
            timeout=self._timeouts.request_s,
            model=model,
            json_body={"model": model},
        )
        await self._wait(lambda: self._reached(model, "unloaded"), model, f"{model!r} to unload")

    async def _stop_work(self, model: str) -> None:
        """Router mode: unload ``model``; single-model mode: wait for the slots, erase them.

        A single-model server cancels the task of a client that has gone: wait until
        ``GET /slots`` shows those slots idle, then erase their prompt cache
        (``POST /slots/{id}?action=erase``). Without ``/slots`` (started with
        ``--no-slots``) there is nothing more to ask.
        """
        if await self._is_router():
            await self.unload(model)
            return
        busy = await self._busy_slots()
        if not busy:
            return

        async def idle() -> bool:
            return not set(busy) & set(await self._busy_slots() or [])

        await poll_until(
            idle,
            timeout=self._timeouts.abort_s,
            interval=self._timeouts.poll_interval_s,
            on_timeout=lambda: BackendError(
                f"llama-server: slots {busy} still processing {self._timeouts.abort_s}s after "
                "their requests were closed",
                backend=self.kind,
                model=model,
                url=self.http.base_url,
            ),
        )
        for slot in busy:
            await self.http.request(
                "POST",
                f"/slots/{slot}",
                operation="abort",
                timeout=self._timeouts.request_s,
                model=model,
                params={"action": "erase"},
            )

    async def _busy_slots(self) -> list[int] | None:
        """Ids of the slots processing a task; ``None`` where ``/slots`` is disabled."""
        response = await self.http.request(
            "GET", "/slots", operation="abort", timeout=self._timeouts.request_s, accept=(501,)
        )
        if response.status_code == 501:
            return None
        try:
            slots = response.json()
            # ``is_processing`` since 2024; older servers report ``state`` (0 = idle).
            return [
                int(slot["id"])
                for slot in slots
                if slot.get("is_processing", slot.get("state", 0) != 0)
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendProtocolError(
                f"llama-server: unexpected /slots answer {response.text[:200]!r}",
                backend=self.kind,
                url=self.http.base_url,
            ) from exc

    async def _healthy(self) -> bool:
        response = await self.http.request(
            "GET", "/health", operation="load", timeout=self._timeouts.health_s, accept=(503,)
        )
        return response.is_success

    async def _reached(self, model: str, target: str) -> bool:
        value, failed = await self._state(model)
        if failed:
            raise ModelLoadFailed(
                f"llama-server: the router failed to load {model!r} (its process exited)",
                backend=self.kind,
                model=model,
                url=self.http.base_url,
            )
        return value == target

    async def _wait(self, done: Callable[[], Awaitable[bool]], model: str, what: str) -> None:
        timeout = self._timeouts.load_s
        await poll_until(
            done,
            timeout=timeout,
            interval=self._timeouts.poll_interval_s,
            on_timeout=lambda: ModelLoadFailed(
                f"llama-server: gave up after {timeout}s waiting for {what}",
                backend=self.kind,
                model=model,
                url=self.http.base_url,
            ),
        )


class VllmBackend(OpenAICompatBackend):
    """vLLM with sleep mode.

    Unload is ``POST /sleep?level=N&mode=wait`` (weights offloaded or discarded, KV cache
    freed), load is ``POST /wake_up``; ``GET /is_sleeping`` tells which. vLLM serves one
    model, chosen when it starts.

    Start vLLM with ``--enable-sleep-mode`` and ``VLLM_SERVER_DEV_MODE=1``; without them
    the sleep routes are missing and unload raises a :class:`BackendError` saying so.
    :meth:`abort` only closes the requests in flight: vLLM aborts a request whose client
    has gone, and it has no other cancel API (sleeping waits for running requests).
    """

    kind = "vllm"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        sleep_level: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if sleep_level not in (1, 2):
            raise ConfigError(f"vLLM sleep_level must be 1 or 2, got {sleep_level!r}")
        super().__init__(base_url, api_key=api_key, timeouts=timeouts, transport=transport)
        self._sleep_level = sleep_level

    async def health(self) -> BackendHealth:
        """``GET /health``."""
        return await self.http.probe("/health")

    async def _dev_route(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        timeout: float,
        model: str | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        """Call a sleep-mode route; ``None`` when the server lacks it (sleep mode off)."""
        response = await self.http.request(
            method,
            path,
            operation=operation,
            timeout=timeout,
            model=model,
            params=params,
            accept=(404,),
        )
        return None if response.status_code == 404 else response

    async def is_sleeping(self) -> bool:
        """``GET /is_sleeping``; a server without sleep mode never sleeps."""
        response = await self._dev_route(
            "GET", "/is_sleeping", operation="is_sleeping", timeout=self._timeouts.request_s
        )
        if response is None:
            return False
        try:
            answer = response.json()
            return bool(answer["is_sleeping"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendProtocolError(
                f"vllm: unexpected /is_sleeping answer {response.text[:200]!r}",
                backend=self.kind,
                url=self.http.base_url,
            ) from exc

    async def loaded_models(self) -> list[LoadedModel]:
        """The served model, unless the server sleeps."""
        return [] if await self.is_sleeping() else await super().loaded_models()

    async def load(self, model: str) -> None:
        """Wake the server up if it sleeps."""
        await self._require_served(model)
        if await self.is_sleeping():
            await self._switch("/wake_up", {}, model, "load", self._timeouts.load_s)

    async def unload(self, model: str) -> None:
        """Put the server to sleep, waiting for running requests to finish."""
        await self._require_served(model)
        if not await self.is_sleeping():
            params = {"level": str(self._sleep_level), "mode": "wait"}
            await self._switch("/sleep", params, model, "unload", self._timeouts.unload_s)

    async def _switch(
        self, path: str, params: dict[str, str], model: str, operation: str, timeout: float
    ) -> None:
        response = await self._dev_route(
            "POST", path, operation=operation, timeout=timeout, model=model, params=params
        )
        if response is None:
            raise BackendError(
                f"vllm: {self.http.base_url}{path} does not exist; start vLLM with "
                "--enable-sleep-mode and VLLM_SERVER_DEV_MODE=1 to load and unload",
                backend=self.kind,
                model=model,
                url=self.http.base_url,
                status_code=404,
            )
        if await self.is_sleeping() != (path == "/sleep"):
            raise ModelLoadFailed(
                f"vllm: {path} returned but /is_sleeping disagrees",
                backend=self.kind,
                model=model,
                url=self.http.base_url,
            )


class LmStudioBackend(OpenAICompatBackend):
    """LM Studio through its REST API v1 (``/api/v1/models``, ``/load``, ``/unload``).

    A repeated load makes a second instance of the same model, so :meth:`load` checks
    ``loaded_instances`` first; :meth:`unload` unloads every instance by ``instance_id``.
    Chat and embeddings use the OpenAI-compatible ``/v1`` routes. :meth:`abort` closes the
    requests in flight, then unloads the model (LM Studio has no cancel API).
    """

    kind = "lmstudio"

    async def _models(self) -> dict[str, Mapping[str, Any]]:
        answer = await self.http.json(
            "GET", "/api/v1/models", operation="list", timeout=self._timeouts.request_s
        )
        models = answer.get("models") if isinstance(answer, Mapping) else None
        if not isinstance(models, list):
            raise BackendProtocolError(
                f"lmstudio: unexpected /api/v1/models answer {answer!r:.200}",
                backend=self.kind,
                url=self.http.base_url,
            )
        return {str(entry["key"]): entry for entry in models}

    async def _model(self, model: str) -> Mapping[str, Any]:
        models = await self._models()
        if model not in models:
            raise self._not_found(model, sorted(models))
        return models[model]

    async def health(self) -> BackendHealth:
        """``GET /api/v1/models`` with the short health timeout."""
        return await self.http.probe("/api/v1/models")

    async def list_models(self) -> list[str]:
        """Every downloaded model's key."""
        return sorted(await self._models())

    async def loaded_models(self) -> list[LoadedModel]:
        """Models with at least one loaded instance."""
        return [
            LoadedModel(
                id=key,
                details={
                    "instance_ids": [i["id"] for i in entry["loaded_instances"]],
                    "size_bytes": entry.get("size_bytes"),
                },
            )
            for key, entry in sorted((await self._models()).items())
            if entry.get("loaded_instances")
        ]

    async def load(self, model: str) -> None:
        """Load one instance, unless one is loaded already."""
        if (await self._model(model)).get("loaded_instances"):
            return
        answer = await self.http.json(
            "POST",
            "/api/v1/models/load",
            operation="load",
            timeout=self._timeouts.load_s,
            model=model,
            json_body={"model": model},
        )
        if not isinstance(answer, Mapping) or answer.get("status") != "loaded":
            raise ModelLoadFailed(
                f"lmstudio: load of {model!r} answered {answer!r:.200}",
                backend=self.kind,
                model=model,
                url=self.http.base_url,
            )

    async def unload(self, model: str) -> None:
        """Unload every loaded instance of ``model``."""
        for instance in (await self._model(model)).get("loaded_instances") or []:
            await self.http.request(
                "POST",
                "/api/v1/models/unload",
                operation="unload",
                timeout=self._timeouts.unload_s,
                model=model,
                json_body={"instance_id": instance["id"]},
            )

    async def _stop_work(self, model: str) -> None:
        """LM Studio has no cancel: unload every instance of ``model``."""
        await self.unload(model)
