"""Loopback is not one person: what a local caller without the server's token may do.

Every request goes to a live server on 127.0.0.1. A caller without the token stands for any
other account on the machine: it reaches the port, and nothing else.
"""

from __future__ import annotations

import httpx
import pytest

from gpuguard.server import ollama_app, running_server

from .conftest import Served, ServeFactory

HELLO = [{"role": "user", "content": "hello there"}]

ADMIN_ROUTES = [
    ("GET", "/admin/logs", None),
    ("GET", "/admin/status", None),
    ("GET", "/admin/gpu", None),
    ("GET", "/admin/jobs", None),
    ("POST", "/admin/jobs/rag", {"path": "docs"}),
    ("POST", "/admin/jobs/schema-refresh", {"database_url": "sqlite:///docs/x.db"}),
    ("POST", "/admin/models/unload", {"model": "fake-llm"}),
    ("POST", "/admin/models/load", {"model": "fake-llm"}),
    ("GET", "/events", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("POST", "/api/pull", {"model": "llama3.2"}),
    ("POST", "/api/create", {"model": "mine", "from": "fake-llm"}),
    ("DELETE", "/api/delete", {"model": "fake-llm"}),
    ("POST", "/api/copy", {"source": "fake-llm", "destination": "copy"}),
]


def stranger(server: Served) -> httpx.AsyncClient:
    """Another local account: the same port, no token."""
    return httpx.AsyncClient(base_url=server.url, timeout=10)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_the_admin_surface_needs_the_token_by_default(
    serve: ServeFactory, method: str, path: str, body: dict[str, str] | None
) -> None:
    async with serve() as server, stranger(server) as http:
        refused = await http.request(method, path, json=body)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        assert server.app.state.access.token not in refused.text
        wrong = await http.request(method, path, json=body, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401, path


async def test_a_stranger_cannot_run_a_job_or_unload_a_model(serve: ServeFactory) -> None:
    async with serve() as server, stranger(server) as http:
        await http.post("/admin/jobs/rag", json={"path": "docs"})
        await http.post("/admin/models/unload", json={"model": "fake-llm"})
        assert (await server.http.get("/admin/jobs")).json()["jobs"] == []
        calls = server.app.state.context.gateway.backend.calls
        assert [call for call, _ in calls if call == "unload"] == []


async def test_retrieval_needs_the_token_where_chat_is_open(serve: ServeFactory) -> None:
    async with serve() as server, stranger(server) as http:
        body = {"model": "fake-llm", "messages": HELLO, "retrieval": True}
        refused = await http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 401
        assert "retrieval" in refused.json()["error"]["message"]
        assert (await server.http.post("/v1/chat/completions", json=body)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", {"model": "fake-llm", "messages": HELLO}),
        ("POST", "/v1/completions", {"model": "fake-llm", "prompt": "hello"}),
        ("GET", "/v1/models", None),
        ("POST", "/api/chat", {"model": "fake-llm", "messages": HELLO, "stream": False}),
        ("POST", "/api/generate", {"model": "fake-llm", "prompt": "hi", "stream": False}),
        ("GET", "/api/tags", None),
        ("GET", "/api/version", None),
        ("GET", "/health", None),
        ("GET", "/", None),
    ],
)
async def test_inference_stays_open_on_loopback_as_ollamas_does(
    serve: ServeFactory, method: str, path: str, body: dict[str, object] | None
) -> None:
    async with serve() as server, stranger(server) as http:
        assert (await http.request(method, path, json=body)).status_code == 200, path


async def test_an_operator_token_closes_inference_too(serve: ServeFactory) -> None:
    async with (
        serve(GPUGUARD_SERVER__TOKEN="operator-secret-1") as server,
        stranger(server) as http,
    ):
        chat = {"model": "fake-llm", "messages": HELLO}
        assert (await http.post("/v1/chat/completions", json=chat)).status_code == 401
        assert (await http.get("/api/tags")).status_code == 401
        bearer = {"Authorization": "Bearer operator-secret-1"}
        answer = await http.post("/v1/chat/completions", json=chat, headers=bearer)
        assert answer.status_code == 200
        assert (await http.get("/admin/logs", headers=bearer)).status_code == 200


async def test_the_ollama_port_keeps_management_behind_the_token(serve: ServeFactory) -> None:
    async with (
        serve() as server,
        running_server(ollama_app(server.app)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        assert (await http.get("/api/tags")).status_code == 200
        refused = await http.request("DELETE", "/api/delete", json={"model": "fake-llm"})
        assert refused.status_code == 401
        assert "token" in refused.json()["error"]


async def test_the_one_time_link_gives_the_page_its_token_once(serve: ServeFactory) -> None:
    async with serve() as server, stranger(server) as http:
        link = server.app.state.access.login_url(server.url)
        assert link.startswith(f"{server.url}/#login=")  # a fragment: never sent to a server
        code = link.partition("#login=")[2]
        first = await http.post("/auth/session", json={"code": code})
        assert first.status_code == 200
        token = first.json()["token"]
        logs = await http.get("/admin/logs", headers={"Authorization": f"Bearer {token}"})
        assert logs.status_code == 200
        again = await http.post("/auth/session", json={"code": code})
        assert again.status_code == 401
        assert "token" not in again.json()["error"]["message"].split(":")[0]
        guessed = await http.post("/auth/session", json={"code": "x" * 32})
        assert guessed.status_code == 401


async def test_the_login_exchange_refuses_other_origins(serve: ServeFactory) -> None:
    async with serve() as server, stranger(server) as http:
        code = server.app.state.access.login_code()
        framed = await http.post(
            "/auth/session", json={"code": code}, headers={"Origin": "http://evil.example"}
        )
        assert framed.status_code == 403
        assert (await http.post("/auth/session", json={"code": code})).status_code == 200


async def test_docs_are_not_served_from_a_cdn(serve: ServeFactory) -> None:
    async with serve() as server:
        docs = await server.http.get("/docs")
        assert docs.status_code == 404
        assert "cdn" not in docs.text.lower()
        described = await server.http.get("/openapi.json")
        assert described.status_code == 200
        assert "/v1/chat/completions" in described.json()["paths"]


async def test_the_token_travels_in_a_url_only_for_event_source(serve: ServeFactory) -> None:
    async with serve() as server, stranger(server) as http:
        token = server.app.state.access.token
        assert (await http.get(f"/admin/logs?token={token}")).status_code == 401
        async with http.stream("GET", f"/events?token={token}") as events:
            assert events.status_code == 200


async def test_the_description_says_which_routes_need_the_token(serve: ServeFactory) -> None:
    async with serve() as server:
        paths = (await server.http.get("/openapi.json")).json()["paths"]
        assert "401" in paths["/admin/logs"]["get"]["responses"]
        assert "401" in paths["/api/pull"]["post"]["responses"]
        assert "401" in paths["/v1/chat/completions"]["post"]["responses"]  # retrieval
        assert "401" not in paths["/v1/models"]["get"]["responses"]  # open on loopback
