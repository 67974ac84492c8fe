"""A live gpuguard server on a free port, over a gateway with in-memory fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from gpuguard import GpuGuard, GpuSet
from gpuguard.embed import Embedder
from gpuguard.embed._tokens import TokenMeaning
from gpuguard.gateway import ModelGateway
from gpuguard.server import JobRunner, Retriever, ServerContext, create_app, running_server
from gpuguard.settings import LlmSettings, ModelSettings, ServerSettings, Settings
from gpuguard.testing import FakeBackend, HashEmbedder

MODEL = "fake-llm"
EMBEDDER = "hash-embedder"


@dataclass
class Live:
    """A running server and handles on what is behind it."""

    url: str
    gateway: ModelGateway
    backend: FakeBackend
    http: httpx.AsyncClient
    client: openai.AsyncOpenAI

    app: FastAPI

    @property
    def guard(self) -> GpuGuard:
        return self.gateway.guard

    def app_context(self) -> ServerContext:
        context: ServerContext = self.app.state.context
        return context


LiveFactory = Callable[..., AbstractAsyncContextManager[Live]]


@asynccontextmanager
async def live_server(
    *,
    backend: FakeBackend | None = None,
    token: str | None = None,
    max_body_bytes: int = 65_536,
    max_waiters: int = 64,
    retriever: Retriever | None = None,
    jobs: JobRunner | None = None,
    gpu_delay_s: float = 0.0,
    models: dict[str, dict[str, Any]] | None = None,
    cpu_embedder: Embedder | None = None,
    token_arrays: TokenMeaning = "openai",
    gpus: GpuSet | None = None,
) -> AsyncIterator[Live]:
    """A live server; ``cpu_embedder`` replaces both hashing embedders (CPU only); ``gpus``
    replaces its one guard."""
    backend = backend if backend is not None else FakeBackend([MODEL, "other-llm"])
    gateway = ModelGateway(
        backend,
        model=MODEL,
        guard=GpuGuard(max_waiters=max_waiters) if gpus is None else None,
        gpus=gpus,
        gpu_embedder=(
            HashEmbedder(name=EMBEDDER, device="cuda", delay_s=gpu_delay_s)
            if cpu_embedder is None
            else None
        ),
        cpu_embedder=cpu_embedder if cpu_embedder is not None else HashEmbedder(name=EMBEDDER),
        token_arrays=token_arrays,
    )
    secret = SecretStr(token) if token else None
    settings = Settings(
        server=ServerSettings(max_body_bytes=max_body_bytes, token=secret),
        llm=LlmSettings(backend="fake"),
        models={name: ModelSettings(**spec) for name, spec in (models or {}).items()},
    )
    app = create_app(settings, gateway=gateway, retriever=retriever, jobs=jobs)
    # Without an operator token the server makes its own admin token: the test is its admin.
    headers = {"Authorization": f"Bearer {token or app.state.access.token}"}
    async with (
        running_server(app) as url,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http,
        openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key=token or app.state.access.token, max_retries=0, timeout=10
        ) as client,
    ):
        yield Live(url, gateway, backend, http, client, app)
    await gateway.aclose()


@pytest.fixture
def make_live() -> LiveFactory:
    return live_server


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with live_server() as server:
        yield server


@asynccontextmanager
async def gpu_held(guard: GpuGuard, operation: str = "test-holder") -> AsyncIterator[asyncio.Event]:
    """Hold the GPU from a test-controlled task until the yielded event is set (or the end)."""
    release = asyncio.Event()
    held = asyncio.Event()

    async def hold() -> None:
        async with guard.hold(operation):
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await held.wait()
    try:
        yield release
    finally:
        release.set()
        await holder


async def until(condition: Callable[[], bool], *, rounds: int = 2000) -> None:
    """Yield to the loop until ``condition`` holds (checkpoints, never a timed sleep)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")
