"""Microsoft Foundry Local, both API generations, and discovery of its dynamic port.

The generation is detected on first use: ``GET /models/loaded`` answers on 0.10+
(``foundry server``); a 404 means the legacy ``foundry service`` routes under ``/openai``.
Chat and embeddings are OpenAI-compatible in both.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from .._exceptions import (
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ModelLoadFailed,
    ModelNotLoaded,
)
from ._http import HttpClient
from ._http_errors import Failure
from ._openai_wire import OpenAIServerBase, list_model_ids
from ._protocol import OPENAI_CHAT_PARAMETERS, BackendHealth, LoadedModel
from ._timeouts import Timeouts

__all__ = ["EXECUTION_PROVIDERS", "FoundryLocalBackend", "discover_foundry_endpoint"]

#: The execution providers the legacy load route accepts as ``ep``.
EXECUTION_PROVIDERS = frozenset({"cpu", "cuda", "dml", "qnn", "webgpu"})

_URL = re.compile(r"https?://[^\s'\"<>]+")
_KIND = "foundry"


async def _run_cli(executable: str, args: tuple[str, ...], timeout_s: float) -> str:
    process = await asyncio.create_subprocess_exec(
        executable,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await process.communicate()
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise BackendTimeout(
            f"foundry: `{executable} {' '.join(args)}` did not finish in {timeout_s}s",
            backend=_KIND,
        ) from exc
    return output.decode(errors="replace")


async def discover_foundry_endpoint(*, executable: str = "foundry", timeout_s: float = 15.0) -> str:
    """Find Foundry Local's base URL (its port changes on every start).

    Runs ``foundry server status`` (0.10+), then ``foundry service status`` (legacy), and
    returns the scheme, host and port of the first http URL either prints. Raises
    :class:`BackendUnavailable` when the CLI is not installed or reports no running
    service, :class:`BackendTimeout` when it hangs longer than ``timeout_s``.
    """
    path = shutil.which(executable)
    if path is None:
        raise BackendUnavailable(
            f"foundry: the `{executable}` CLI is not on PATH; install Foundry Local or "
            "configure its endpoint URL",
            backend=_KIND,
        )
    outputs = []
    for args in (("server", "status"), ("service", "status")):
        output = await _run_cli(path, args, timeout_s)
        match = _URL.search(output)
        if match:
            parts = urlsplit(match.group(0).rstrip(".,;)"))
            return f"{parts.scheme}://{parts.netloc}"
        outputs.append(output.strip())
    raise BackendUnavailable(
        "foundry: Foundry Local is not running (no URL in `foundry server status` or "
        f"`foundry service status`: {' | '.join(outputs)[:300]!r}); start it with "
        "`foundry service start`",
        backend=_KIND,
    )


def _model_ids(answer: Any) -> list[str]:
    """Model ids from a bare array, or an object holding one under models/data."""
    if isinstance(answer, Mapping):
        answer = answer.get("models", answer.get("data"))
    if not isinstance(answer, list):
        raise ValueError(answer)
    return [
        str(item) if not isinstance(item, Mapping) else str(item.get("id") or item["name"])
        for item in answer
    ]


class _Api(Protocol):
    """The routes that differ between the two generations."""

    generation: str
    status_path: str

    async def loaded(self, http: HttpClient) -> list[str]: ...

    async def load(self, http: HttpClient, model: str) -> None: ...

    async def unload(self, http: HttpClient, model: str) -> None: ...


class _LegacyApi:
    """``foundry service``: ``/openai/...`` routes, 200 with an empty body on success."""

    generation = "legacy"
    status_path = "/openai/status"

    def __init__(self, *, ttl_s: int | None, execution_provider: str | None) -> None:
        self._params = {"ttl": str(ttl_s)} if ttl_s is not None else {}
        if execution_provider is not None:
            self._params["ep"] = execution_provider

    async def loaded(self, http: HttpClient) -> list[str]:
        answer = await http.json(
            "GET", "/openai/loadedmodels", operation="loaded", timeout=http.timeouts.request_s
        )
        return _model_ids(answer)

    async def load(self, http: HttpClient, model: str) -> None:
        await self._call(http, "load", model, http.timeouts.load_s, self._params)

    async def unload(self, http: HttpClient, model: str) -> None:
        await self._call(http, "unload", model, http.timeouts.unload_s, {"force": "true"})

    async def _call(
        self, http: HttpClient, action: str, model: str, timeout: float, params: dict[str, str]
    ) -> None:
        await http.request(
            "GET",
            f"/openai/{action}/{quote(model, safe='')}",
            operation=action,
            timeout=timeout,
            model=model,
            params=params,
        )


class _ModernApi:
    """``foundry server`` 0.10+: ``/models/...`` routes answering ``{"status": ...}``."""

    generation = "0.10+"
    status_path = "/status"

    async def loaded(self, http: HttpClient) -> list[str]:
        answer = await http.json(
            "GET", "/models/loaded", operation="loaded", timeout=http.timeouts.request_s
        )
        return _model_ids(answer)

    async def _status(
        self, http: HttpClient, action: str, model: str, timeout: float, allowed: set[str]
    ) -> None:
        answer = await http.json(
            "GET",
            f"/models/{action}/{quote(model, safe='')}",
            operation=action,
            timeout=timeout,
            model=model,
        )
        status = answer.get("status") if isinstance(answer, Mapping) else None
        if status not in allowed:
            raise http.errors.fault(
                BackendProtocolError, f"{action} of {model!r} answered {answer!r:.200}", model=model
            )

    async def load(self, http: HttpClient, model: str) -> None:
        await self._status(http, "load", model, http.timeouts.load_s, {"loaded", "already_loaded"})

    async def unload(self, http: HttpClient, model: str) -> None:
        await self._status(
            http, "unload", model, http.timeouts.unload_s, {"unloaded", "not_loaded"}
        )


class FoundryLocalBackend(OpenAIServerBase):
    """Foundry Local (``foundry service`` before 0.10, ``foundry server`` from 0.10).

    ``base_url`` is optional: without it the endpoint is discovered with the ``foundry``
    CLI on first use (:func:`discover_foundry_endpoint`). ``execution_provider`` (one of
    :data:`EXECUTION_PROVIDERS`) and ``ttl_s`` are passed to the legacy load route. On
    0.10+ chat does not load a model on demand: chat on an unloaded model raises
    :class:`ModelNotLoaded`, so load first; loading an uncached model raises
    :class:`ModelLoadFailed` (download it with ``foundry model download``).
    """

    kind = _KIND
    chat_parameters = OPENAI_CHAT_PARAMETERS - {"logprobs", "top_logprobs"}
    """What Foundry Local's chat route takes (it reports no logprobs)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        execution_provider: str | None = None,
        ttl_s: int | None = None,
        executable: str = "foundry",
        discovery_timeout_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if execution_provider is not None and execution_provider not in EXECUTION_PROVIDERS:
            raise ConfigError(
                f"Foundry Local execution_provider must be one of {sorted(EXECUTION_PROVIDERS)},"
                f" got {execution_provider!r}"
            )
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigError(f"Foundry Local ttl_s must be positive, got {ttl_s!r}")
        super().__init__(api_key=api_key, timeouts=timeouts, transport=transport)
        if base_url is not None:
            self._connect(base_url)
        self._legacy = _LegacyApi(ttl_s=ttl_s, execution_provider=execution_provider)
        self._executable = executable
        self._discovery_timeout_s = discovery_timeout_s
        self._api: _Api | None = None
        self._setup = asyncio.Lock()

    @property
    def generation(self) -> str | None:
        """``"legacy"`` or ``"0.10+"`` once detected, else ``None``."""
        return self._api.generation if self._api is not None else None

    def _classify(self, failure: Failure) -> type[BackendError] | None:
        if failure.operation == "load" and failure.status == 400:
            return ModelLoadFailed  # 0.10+: known to the catalogue but not downloaded
        if "not loaded" in failure.message.lower():
            return ModelNotLoaded  # 0.10+ chat and embeddings do not auto-load
        return None

    async def _client(self) -> HttpClient:
        return (await self._connected())[1]

    async def _connected(self) -> tuple[_Api, HttpClient]:
        """Discover the endpoint and detect the generation, once."""
        async with self._setup:
            if self._http is None:
                endpoint = await discover_foundry_endpoint(
                    executable=self._executable, timeout_s=self._discovery_timeout_s
                )
                self._connect(endpoint)
            assert self._http is not None
            if self._api is None:
                response = await self._http.request(
                    "GET",
                    "/models/loaded",
                    operation="detect",
                    timeout=self._timeouts.request_s,
                    accept=(404,),
                )
                self._api = self._legacy if response.status_code == 404 else _ModernApi()
            return self._api, self._http

    async def health(self) -> BackendHealth:
        """The generation's status route, with the short health timeout."""
        try:
            api, http = await self._connected()
        except BackendError as exc:
            return BackendHealth(ok=False, backend=self.kind, url=self.base_url, detail=str(exc))
        health = await http.probe(api.status_path)
        return BackendHealth(
            ok=health.ok,
            backend=self.kind,
            url=health.url,
            detail=f"foundry {api.generation}: {health.detail}",
        )

    async def list_models(self) -> list[str]:
        """The models in the local cache (``GET /v1/models``)."""
        return await list_model_ids(await self._client())

    async def loaded_models(self) -> list[LoadedModel]:
        """The loaded models."""
        api, http = await self._connected()
        try:
            ids = await api.loaded(http)
        except ValueError as exc:
            raise http.errors.fault(
                BackendProtocolError, f"unexpected loaded-models answer {exc.args[0]!r:.200}"
            ) from exc
        return [LoadedModel(id=model) for model in ids]

    async def load(self, model: str) -> None:
        """Load ``model`` (minutes for a large one: bounded by ``Timeouts.load_s``)."""
        api, http = await self._connected()
        await api.load(http, model)

    async def unload(self, model: str) -> None:
        """Unload ``model`` (legacy: with ``force=true``)."""
        api, http = await self._connected()
        await api.unload(http, model)

    async def _stop_work(self, model: str) -> None:
        """Foundry Local has no cancel: unload the model (legacy: ``force=true``)."""
        await self.unload(model)
