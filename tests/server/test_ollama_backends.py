"""The Ollama-compatible API over real backends: the embedded llama.cpp (tiny random model,
meaningless output) and the Ollama protocol double (model management passed through), and
on a port of its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from typer.testing import CliRunner

from gpuguard import GpuEvent, GpuGuard
from gpuguard.cli import app as cli_app
from gpuguard.gateway import ModelGateway
from gpuguard.llm import OllamaBackend, Timeouts
from gpuguard.server import create_app, ollama_app, running_server
from gpuguard.settings import LlmSettings, Settings, load_settings
from gpuguard.testing import FakeBackend, HashEmbedder, IntervalRecorder
from gpuguard.testing.ollama_double import OllamaDouble

LLAMA = "llama3.2:latest"


def _lease_statuses(guard: GpuGuard) -> list[tuple[str, str]]:
    return [
        (e.operation, e.status)
        for e in guard.events.history(kinds={"gpu"})
        if isinstance(e, GpuEvent) and e.status in ("started", "completed")
    ]


# --- the embedded llama.cpp ----------------------------------------------------------------


@pytest.fixture
async def llama_url(tmp_path: Path) -> AsyncIterator[tuple[str, GpuGuard]]:
    settings = load_settings(
        data_dir=tmp_path,
        llm={"backend": "llama-cpp"},
        embeddings={"gpu_engine": "hash", "cpu_engine": "hash"},
    )
    app = create_app(settings)
    async with running_server(app) as url:
        yield url, app.state.context.gateway.guard


async def test_official_client_over_embedded_llama_cpp(llama_url: tuple[str, GpuGuard]) -> None:
    url, guard = llama_url
    client = ollama.AsyncClient(host=url)
    model = "tiny-random"
    assert model in [m.model for m in (await client.list()).models]
    parts = [
        part
        async for part in await client.chat(
            model=model,
            messages=[{"role": "user", "content": "hello"}],
            options={"num_predict": 6},
            stream=True,
        )
    ]
    final = parts[-1]
    assert final.done
    assert final.done_reason in ("length", "stop")
    assert final.eval_count is not None
    assert 0 < final.eval_count <= 6
    generated = await client.generate(model=model, prompt="hi", options={"num_predict": 4})
    assert generated.done
    assert generated.eval_count is not None
    assert 0 < generated.eval_count <= 4
    assert [m.model for m in (await client.ps()).models] == [model]
    unloaded = await client.generate(model=model, prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert (await client.ps()).models == []
    assert ("chat", "completed") in _lease_statuses(guard)
    assert _lease_statuses(guard)[-2:] == [("unload", "started"), ("unload", "completed")]
    assert guard.current is None
    reloaded = await client.generate(model=model, prompt="hi", options={"num_predict": 1})
    assert reloaded.load_duration is not None
    assert reloaded.load_duration > 0  # the generation loaded the model first
    loaded = await client.generate(model=model, prompt="hi", options={"num_predict": 1})
    assert loaded.load_duration == 0


async def test_raw_ndjson_over_embedded_llama_cpp(llama_url: tuple[str, GpuGuard]) -> None:
    url, _ = llama_url
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        model = (await http.get("/api/tags")).json()["models"][0]["name"]
        body = {"model": model, "prompt": "hello", "options": {"num_predict": 5}}
        response = await http.post("/api/generate", json=body)
    every = [json.loads(line) for line in response.text.splitlines()]
    lines = [line for line in every if "gpuguard" not in line]  # not the GPU wait's notices
    assert all(line["done"] is False for line in lines[:-1])
    assert lines[-1]["done"] is True
    assert 0 < len(lines) - 1 <= 5
    assert lines[-1]["eval_count"] > 0
    assert lines[-1]["done_reason"] in ("length", "stop")


# --- the Ollama double: pass-through -------------------------------------------------------


@pytest.fixture
def recorder() -> Iterator[IntervalRecorder]:
    recorder = IntervalRecorder()
    yield recorder
    assert recorder.overlaps() == [], "GPU work overlapped"


@asynccontextmanager
async def _over_ollama(double: OllamaDouble) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The server's URL over ``double``, and the admin's headers for model management."""
    timeouts = Timeouts(connect_s=2, health_s=2, request_s=5, load_s=5, unload_s=5, read_s=5)
    backend = OllamaBackend(double.base_url, timeouts=timeouts)
    gateway = ModelGateway(backend, model=LLAMA, cpu_embedder=HashEmbedder(name="hash"))
    app = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    try:
        async with running_server(app) as url:
            yield url, {"Authorization": f"Bearer {app.state.access.token}"}
    finally:
        await gateway.aclose()


@pytest.fixture
async def via_ollama(recorder: IntervalRecorder) -> AsyncIterator[tuple[str, OllamaDouble]]:
    with OllamaDouble(recorder=recorder, token_latency_s=0.001) as double:
        async with _over_ollama(double) as (url, _):
            yield url, double


@pytest.fixture
async def admin_over_ollama(
    recorder: IntervalRecorder,
) -> AsyncIterator[tuple[ollama.AsyncClient, OllamaDouble]]:
    """An Ollama client holding the server's admin token (model management), and the double."""
    with OllamaDouble(recorder=recorder, token_latency_s=0.001) as double:
        async with _over_ollama(double) as (url, admin):
            yield ollama.AsyncClient(host=url, headers=admin), double


async def test_pull_streams_ollamas_progress(
    admin_over_ollama: tuple[ollama.AsyncClient, OllamaDouble],
) -> None:
    client, double = admin_over_ollama
    progress = [p async for p in await client.pull("tinyllama", stream=True)]
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    assert any(p.completed == p.total and p.total for p in progress)
    assert (await client.pull("tinyllama")).status == "success"
    assert "tinyllama:latest" in [m.model for m in (await client.list()).models]
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        [p async for p in await client.pull("no-such-model", stream=True)]
    assert "POST /api/pull" in double.requests


async def test_delete_copy_and_create_pass_through(
    admin_over_ollama: tuple[ollama.AsyncClient, OllamaDouble],
) -> None:
    client, double = admin_over_ollama
    assert (await client.copy(LLAMA, "backup")).status == "success"
    assert "backup:latest" in double.models
    created = [p async for p in await client.create("mine", from_=LLAMA, stream=True)]
    assert created[-1].status == "success"
    assert "mine:latest" in double.models
    assert (await client.delete("backup")).status == "success"
    assert "backup:latest" not in double.models
    for call in (client.delete("backup"), client.copy("nothing", "x")):
        with pytest.raises(ollama.ResponseError) as missing:
            await call
        assert missing.value.status_code == 404


async def test_show_is_ollamas_own_answer(via_ollama: tuple[str, OllamaDouble]) -> None:
    url, _ = via_ollama
    async with httpx.AsyncClient(base_url=url) as http:
        shown = await http.post("/api/show", json={"name": "llama3.2"})
        missing = await http.post("/api/show", json={"model": "nope"})
        embedder = await http.post("/api/show", json={"model": "hash"})
    assert "num_ctx" in shown.json()["parameters"]
    assert embedder.json()["capabilities"] == ["embedding"]
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]


async def test_chat_over_ollama_holds_the_lease_and_ps_shows_vram(
    via_ollama: tuple[str, OllamaDouble],
) -> None:
    url, double = via_ollama
    client = ollama.AsyncClient(host=url)
    answer = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "a b"}])
    assert answer.message.content == "echo: a b"
    [running] = (await client.ps()).models
    assert running.size_vram == double.models[LLAMA]
    assert running.expires_at is not None
    work = [i.what for i in double.recorder.intervals]
    assert work[:2] == [f"load {LLAMA}", f"chat {LLAMA}"]


# --- a port of its own ---------------------------------------------------------------------


async def test_the_ollama_api_on_its_own_port() -> None:
    gateway = ModelGateway(FakeBackend(["fake-llm"]), model="fake-llm")
    app = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    async with (
        running_server(app) as main,
        running_server(ollama_app(app)) as own,
        httpx.AsyncClient(base_url=own) as http,
    ):
        root = await http.get("/")
        assert root.text == "Ollama is running"
        assert (await http.head("/")).status_code == 200
        assert (await http.get("/api/version")).status_code == 200
        assert (await http.get("/v1/models")).status_code == 404
        answer = await ollama.AsyncClient(host=own).chat(
            model="fake-llm", messages=[{"role": "user", "content": "x"}]
        )
        assert answer.message.content == "echo: x"
        assert "html" in (await http.get(f"{main}/")).headers["content-type"]


def test_serve_takes_the_ollama_port_from_flag_or_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}

    async def fake_serve(app: object, **kwargs: Any) -> None:
        served.update(kwargs)

    monkeypatch.setattr("gpuguard.server.serve", fake_serve)
    monkeypatch.setenv("GPUGUARD_LLM__BACKEND", "fake")
    runner = CliRunner()
    assert runner.invoke(cli_app, ["serve", "--ollama"]).exit_code == 0
    assert served["ollama_port"] == 11434
    assert runner.invoke(cli_app, ["serve", "--ollama-port", "11500"]).exit_code == 0
    assert served["ollama_port"] == 11500
    assert runner.invoke(cli_app, ["serve"]).exit_code == 0
    assert served["ollama_port"] is None
    monkeypatch.setenv("GPUGUARD_SERVER__OLLAMA_LISTEN", "true")
    assert runner.invoke(cli_app, ["serve"]).exit_code == 0
    assert served["ollama_port"] == 11434


async def test_serve_answers_on_both_ports() -> None:
    from gpuguard.server import serve

    gateway = ModelGateway(FakeBackend(["fake-llm"]), model="fake-llm")
    app = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    ports = []
    for _ in range(2):
        async with running_server(app) as probe:
            ports.append(int(probe.rsplit(":", 1)[1]))
    task = asyncio.create_task(serve(app, port=ports[0], ollama_port=ports[1]))
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(500):
                try:
                    answer = await http.get(f"http://127.0.0.1:{ports[1]}/")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.01)
            assert answer.text == "Ollama is running"
            tags = await http.get(f"http://127.0.0.1:{ports[0]}/api/tags")
            assert tags.json()["models"][0]["name"] == "fake-llm"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
