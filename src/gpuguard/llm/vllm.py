"""vLLM, with sleep mode as unload and wake-up as load."""

from __future__ import annotations

import httpx

from .._exceptions import BackendError, BackendProtocolError, ConfigError, ModelLoadFailed
from ._protocol import BackendHealth, LoadedModel
from ._timeouts import Timeouts
from .openai_compat import OpenAICompatBackend

__all__ = ["VllmBackend"]


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

    async def is_sleeping(self) -> bool:
        """``GET /is_sleeping``; a server without sleep mode never sleeps."""
        response = await self.http.request(
            "GET",
            "/is_sleeping",
            operation="is_sleeping",
            timeout=self._timeouts.request_s,
            accept=(404,),  # no sleep mode
        )
        if response.status_code == 404:
            return False
        try:
            answer = response.json()
            return bool(answer["is_sleeping"])
        except (ValueError, KeyError, TypeError) as exc:
            raise self.http.errors.fault(
                BackendProtocolError, f"unexpected /is_sleeping answer {response.text[:200]!r}"
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
        response = await self.http.request(
            "POST",
            path,
            operation=operation,
            timeout=timeout,
            model=model,
            params=params,
            accept=(404,),  # no sleep mode
        )
        if response.status_code == 404:
            raise self.http.errors.fault(
                BackendError,
                f"{self.http.base_url}{path} does not exist; start vLLM with "
                "--enable-sleep-mode and VLLM_SERVER_DEV_MODE=1 to load and unload",
                model=model,
                status_code=404,
            )
        if await self.is_sleeping() != (path == "/sleep"):
            raise self.http.errors.fault(
                ModelLoadFailed, f"{path} returned but /is_sleeping disagrees", model=model
            )
