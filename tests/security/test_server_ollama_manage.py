"""Ollama model management through gpuguard: only what Ollama documents, no files, no SSRF.

The server runs over the Ollama protocol double; a refused request must never reach it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gpuguard.gateway import ModelGateway
from gpuguard.llm import OllamaBackend, Timeouts
from gpuguard.server import create_app, running_server
from gpuguard.settings import LlmSettings, ServerSettings, Settings
from gpuguard.testing import HashEmbedder
from gpuguard.testing.ollama_double import OllamaDouble

LLAMA = "llama3.2:latest"
DIGEST = "sha256:" + "a" * 64


@dataclass
class Managed:
    http: httpx.AsyncClient  # holds the admin token
    double: OllamaDouble


@asynccontextmanager
async def managed(**server: Any) -> AsyncIterator[Managed]:
    with OllamaDouble() as double:
        timeouts = Timeouts(connect_s=2, health_s=2, request_s=5, load_s=5, unload_s=5, read_s=5)
        backend = OllamaBackend(double.base_url, timeouts=timeouts)
        gateway = ModelGateway(backend, model=LLAMA, cpu_embedder=HashEmbedder(name="hash"))
        settings = Settings(llm=LlmSettings(backend="fake"), server=ServerSettings(**server))
        app = create_app(settings, gateway=gateway)
        admin = {"Authorization": f"Bearer {app.state.access.token}"}
        try:
            async with (
                running_server(app) as url,
                httpx.AsyncClient(base_url=url, headers=admin, timeout=10) as http,
            ):
                yield Managed(http, double)
        finally:
            await gateway.aclose()


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        # A registry of the caller's choosing: the Ollama server fetches from it (SSRF).
        ("/api/pull", {"model": "127.0.0.1:22999/internal/secrets:latest"}, "registry"),
        ("/api/pull", {"model": "localhost/internal/x"}, "registry"),
        ("/api/pull", {"model": "evil.example/library/llama3"}, "registry"),
        ("/api/pull", {"model": "llama3.2", "insecure": True}, "insecure"),
        # Files on the Ollama host.
        ("/api/create", {"model": "mine", "from": "/etc/passwd"}, "from"),
        ("/api/create", {"model": "mine", "from": "../../etc/shadow"}, "from"),
        ("/api/create", {"model": "mine", "modelfile": "FROM /etc/shadow"}, "modelfile"),
        ("/api/create", {"model": "mine", "path": "/home/op/Modelfile"}, "path"),
        ("/api/create", {"model": "mine", "files": {"m.gguf": "/etc/passwd"}}, "files"),
        ("/api/create", {"model": "mine", "files": {"../m.gguf": DIGEST}}, "files"),
        ("/api/create", {"model": "mine", "adapters": {"a": "~/.ssh/id_rsa"}}, "adapters"),
        # Fields Ollama does not document are not forwarded: refused with their name.
        ("/api/pull", {"model": "llama3.2", "username": "x", "password": "y"}, "username"),
        ("/api/create", {"model": "mine", "from": LLAMA, "quantize_path": "/x"}, "quantize_path"),
        ("/api/copy", {"source": LLAMA, "destination": "x", "overwrite": True}, "overwrite"),
    ],
)
async def test_management_forwards_only_what_ollama_documents(
    path: str, body: dict[str, Any], named: str
) -> None:
    async with managed() as server:
        refused = await server.http.post(path, json=body)
        assert refused.status_code == 400, refused.text
        assert named in refused.json()["error"]
        assert f"POST {path}" not in server.double.requests


async def test_the_model_being_served_cannot_be_deleted() -> None:
    async with managed() as server:
        refused = await server.http.request("DELETE", "/api/delete", json={"model": LLAMA})
        assert refused.status_code == 400
        assert "serves" in refused.json()["error"]
        assert LLAMA in server.double.models


async def test_documented_requests_still_pass_through() -> None:
    async with managed() as server:
        copied = await server.http.post("/api/copy", json={"source": LLAMA, "destination": "b"})
        assert copied.status_code == 200
        created = await server.http.post(
            "/api/create",
            json={"model": "mine", "from": LLAMA, "system": "Be brief.", "stream": False},
        )
        assert created.json()["status"] == "success"
        deleted = await server.http.request("DELETE", "/api/delete", json={"model": "b"})
        assert deleted.status_code == 200
        pulled = await server.http.post("/api/pull", json={"model": "hf.co/x/y", "stream": False})
        assert "error" in pulled.json()  # the double has no such model: Ollama's answer
        assert "POST /api/pull" in server.double.requests


async def test_the_operator_may_allow_registries_and_local_paths() -> None:
    async with managed(
        ollama_registries=["registry.lan:5000"],
        ollama_allow_insecure=True,
        ollama_allow_local_paths=True,
    ) as server:
        body = {"model": "registry.lan:5000/team/model", "insecure": True, "stream": False}
        await server.http.post("/api/pull", json=body)  # the double knows no such model
        assert "POST /api/pull" in server.double.requests  # but it was asked
        created = await server.http.post(
            "/api/create", json={"model": "m", "from": LLAMA, "path": "/srv/M", "stream": False}
        )
        assert created.status_code == 200
