"""llama.cpp's ``llama-server``, in single-model or router mode.

The mode is detected from the first ``GET /models`` answer: router entries carry a
``status``. Router mode loads and unloads asynchronously, so both poll; single-model mode
loads at start and cannot unload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from .._exceptions import BackendError, BackendProtocolError, ModelLoadFailed
from ._protocol import LLAMA_CPP_SAMPLERS, OPENAI_CHAT_PARAMETERS, BackendHealth, LoadedModel
from .openai_compat import OpenAICompatBackend

__all__ = ["LlamaServerBackend"]


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
    chat_parameters = OPENAI_CHAT_PARAMETERS | LLAMA_CPP_SAMPLERS
    """OpenAI's options and llama.cpp's samplers, which its chat route takes as extra fields."""
    _router: bool | None = None  # the mode, once a /models answer showed it

    @property
    def router_mode(self) -> bool | None:
        """True in router mode, False in single-model mode, ``None`` until detected."""
        return self._router

    async def _catalogue(self) -> list[Mapping[str, Any]]:
        data: list[Mapping[str, Any]] = await self.http.listing("/models", "data", operation="list")
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
        response = await self._order("load", model, accept=(400,))
        if response.status_code == 400 and "already" not in response.text.lower():
            raise self.http.errors.for_response(response, operation="load", model=model)
        await self._wait(lambda: self._reached(model, "loaded"), model, f"{model!r} to load")

    async def unload(self, model: str) -> None:
        """Router: unload and wait for ``unloaded``; single-model mode cannot unload."""
        if not await self._is_router():
            raise self._cannot_unload(model)
        value, _ = await self._state(model)
        if value in ("unloaded", ""):
            return
        await self._order("unload", model)
        await self._wait(lambda: self._reached(model, "unloaded"), model, f"{model!r} to unload")

    async def _order(
        self, action: str, model: str, *, accept: tuple[int, ...] = ()
    ) -> httpx.Response:
        """``POST /models/{action}``: the router answers before the work is done."""
        return await self.http.request(
            "POST",
            f"/models/{action}",
            operation=action,
            timeout=self._timeouts.request_s,
            model=model,
            json_body={"model": model},
            accept=accept,
        )

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

        await self.http.poll_until(
            idle,
            timeout=self._timeouts.abort_s,
            on_timeout=lambda: self.http.errors.fault(
                BackendError,
                f"slots {busy} still processing {self._timeouts.abort_s}s after their "
                "requests were closed",
                model=model,
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
            raise self.http.errors.fault(
                BackendProtocolError, f"unexpected /slots answer {response.text[:200]!r}"
            ) from exc

    async def _healthy(self) -> bool:
        response = await self.http.request(
            "GET", "/health", operation="load", timeout=self._timeouts.health_s, accept=(503,)
        )
        return response.is_success

    async def _reached(self, model: str, target: str) -> bool:
        value, failed = await self._state(model)
        if failed:
            raise self.http.errors.fault(
                ModelLoadFailed,
                f"the router failed to load {model!r} (its process exited)",
                model=model,
            )
        return value == target

    async def _wait(self, done: Callable[[], Awaitable[bool]], model: str, what: str) -> None:
        timeout = self._timeouts.load_s
        await self.http.poll_until(
            done,
            timeout=timeout,
            on_timeout=lambda: self.http.errors.fault(
                ModelLoadFailed, f"gave up after {timeout}s waiting for {what}", model=model
            ),
        )
