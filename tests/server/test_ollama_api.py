"""The Ollama-compatible API over the fake backend: the official ``ollama`` client (sync and
async) and raw NDJSON against a live server, the GPU lease, the waiting notice, errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import ollama
import pytest

from gpuguard import GpuEvent, GpuGuard
from gpuguard.llm import ChatOptions
from gpuguard.server._ollama_options import chat_parameters
from gpuguard.server._ollama_schemas import keep_alive_seconds

from .conftest import EMBEDDER, MODEL, Live, LiveFactory, gpu_held

HELLO = [{"role": "user", "content": "hello there"}]


def _gpu_events(guard: GpuGuard) -> list[GpuEvent]:
    return [e for e in guard.events.history(kinds={"gpu"}) if isinstance(e, GpuEvent)]


def _ndjson(text: str) -> list[dict[str, Any]]:
    lines = text.split("\n")
    assert lines[-1] == "", "every NDJSON line ends with a newline"
    return [json.loads(line) for line in lines[:-1]]


async def _client_parts(live: Live, **request: Any) -> list[Any]:
    client = ollama.AsyncClient(host=live.url)
    return [part async for part in await client.chat(model=MODEL, stream=True, **request)]


# --- the official client -----------------------------------------------------------------


async def test_async_client_chats_streamed_and_not(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    answer = await client.chat(model=MODEL, messages=HELLO)
    assert answer.message.content == "echo: hello there"
    assert answer.done
    assert answer.done_reason == "stop"
    assert answer.eval_count == 3
    assert answer.total_duration
    assert answer.total_duration > 0
    parts = [part async for part in await client.chat(model=MODEL, messages=HELLO, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == "echo: hello there"
    assert [p.done for p in parts] == [False, False, False, True]


async def test_sync_client_generates_streamed_and_not(live: Live) -> None:
    def run() -> tuple[Any, list[Any]]:
        client = ollama.Client(host=live.url)
        whole = client.generate(model=MODEL, prompt="a b", system="be brief", stream=False)
        return whole, list(client.generate(model=MODEL, prompt="a b", stream=True))

    whole, parts = await asyncio.to_thread(run)
    assert whole.response == "echo: a b"
    assert whole.done_reason == "stop"
    assert "".join(p.response for p in parts) == "echo: a b"
    assert parts[-1].done
    assert parts[-1].eval_count == 3
    assert live.backend.calls.count(("chat", MODEL)) == 2


async def test_num_predict_and_temperature_reach_the_gateway(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    answer = await client.generate(
        model=MODEL, prompt="one two three four", options={"num_predict": 2, "temperature": 0}
    )
    assert answer.response == "echo: one"
    unlimited = await client.generate(model=MODEL, prompt="one two", options={"num_predict": -1})
    assert unlimited.response == "echo: one two"


async def test_tags_show_and_version_through_the_client(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    names = [m.model for m in (await client.list()).models]
    assert names == [MODEL, "other-llm", EMBEDDER]
    shown = await client.show(MODEL)
    assert shown.capabilities == ["completion", "tools"]  # the fake backend calls tools
    assert shown.modelinfo is not None
    assert (await client.show(EMBEDDER)).capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError) as missing:
        await client.show("nope")
    assert missing.value.status_code == 404
    version = (await live.http.get("/api/version")).json()
    assert version["version"].count(".") == 2


async def test_show_accepts_the_older_name_field(live: Live) -> None:
    # Continue asks /api/show with {"name": ...}.
    response = await live.http.post("/api/show", json={"name": MODEL})
    assert response.status_code == 200
    assert "parameters" not in response.json()


async def test_model_names_with_and_without_latest_mean_the_same_model(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    answer = await client.chat(model="other-llm:latest", messages=HELLO)
    assert answer.message.content == "echo: hello there"
    assert ("chat", "other-llm") in live.backend.calls


async def test_embed_and_the_older_embeddings(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    result = await client.embed(model=EMBEDDER, input=["first", "second"])
    assert len(result.embeddings) == 2
    assert len(result.embeddings[0]) > 0
    single = await client.embed(model=EMBEDDER, input="first")
    assert single.embeddings[0] == result.embeddings[0]
    legacy = await client.embeddings(model=EMBEDDER, prompt="first")
    assert list(legacy.embedding) == pytest.approx(result.embeddings[0])
    assert (await live.http.post("/api/embeddings", json={"model": EMBEDDER})).json() == {
        "embedding": []
    }
    with pytest.raises(ollama.ResponseError) as missing:
        await client.embed(model=MODEL, input="x")
    assert missing.value.status_code == 404


async def test_embed_dimensions_truncate_and_renormalise(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    texts = [" ".join(f"{word}{i}" for i in range(200)) for word in ("word", "term")]
    full = (await client.embed(model=EMBEDDER, input=texts)).embeddings
    short = (await client.embed(model=EMBEDDER, input=texts, dimensions=128)).embeddings
    assert [len(row) for row in short] == [128, 128]
    for whole, shortened in zip(full, short, strict=True):
        vector = np.array(shortened)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        head = np.array(whole[:128])
        np.testing.assert_allclose(vector, head / np.linalg.norm(head), atol=1e-6)


@pytest.mark.parametrize("dimensions", [4096, 0])
async def test_embed_dimensions_the_model_cannot_give_are_a_400(
    live: Live, dimensions: int
) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        await ollama.AsyncClient(host=live.url).embed(
            model=EMBEDDER, input="a", dimensions=dimensions
        )
    assert refused.value.status_code == 400
    assert "dimensions" in refused.value.error
    body = {"model": EMBEDDER, "input": "a", "dimensions": dimensions}
    response = await live.http.post("/api/embed", json=body)
    assert list(response.json()) == ["error"]


async def test_embeddings_run_on_the_gpu_embedder_under_the_lease(live: Live) -> None:
    await ollama.AsyncClient(host=live.url).embed(model=EMBEDDER, input=["a"])
    history = _gpu_events(live.guard)
    assert any(e.operation == "embed" and e.status == "completed" for e in history)


async def test_load_duration_is_the_load_this_request_caused(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    first = await client.chat(model=MODEL, messages=HELLO)  # the model is not loaded yet
    assert first.load_duration is not None
    assert first.load_duration > 0
    assert (await client.chat(model=MODEL, messages=HELLO)).load_duration == 0
    await client.generate(model=MODEL, prompt="", keep_alive=0)  # unload it
    parts = [part async for part in await client.generate(model=MODEL, prompt="a", stream=True)]
    assert parts[-1].load_duration is not None
    assert parts[-1].load_duration > 0
    assert (await client.generate(model=MODEL, prompt="a")).load_duration == 0
    loading = await client.embed(model=EMBEDDER, input="first")  # loads the embedding model
    assert loading.load_duration is not None
    assert loading.load_duration > 0
    assert (await client.embed(model=EMBEDDER, input="again")).load_duration == 0


# --- raw NDJSON ----------------------------------------------------------------------------


async def test_raw_ndjson_stream_follows_ollamas_shapes(live: Live) -> None:
    response = await live.http.post("/api/chat", json={"model": MODEL, "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = _ndjson(response.text)
    for line in lines[:-1]:
        assert set(line) == {"model", "created_at", "message", "done"}
        assert line["message"]["role"] == "assistant"
        assert line["done"] is False
        assert line["created_at"].endswith("Z")
    final = lines[-1]
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    for key in ("total_duration", "prompt_eval_duration", "eval_duration", "load_duration"):
        assert isinstance(final[key], int)
        assert final[key] >= 0  # nanoseconds
    assert final["total_duration"] >= final["eval_duration"]
    assert final["eval_count"] == 3


async def test_generate_stream_puts_text_under_response(live: Live) -> None:
    response = await live.http.post("/api/generate", json={"model": MODEL, "prompt": "x y"})
    lines = _ndjson(response.text)
    assert "".join(line["response"] for line in lines) == "echo: x y"
    assert "message" not in lines[0]


# --- load, unload, keep_alive --------------------------------------------------------------


def _lease_operations(live: Live) -> list[tuple[str, str | None, str]]:
    return [
        (e.operation, e.model, e.status)
        for e in _gpu_events(live.guard)
        if e.status in ("started", "completed")
    ]


@pytest.mark.parametrize(
    ("route", "empty"), [("/api/chat", "messages"), ("/api/generate", "prompt")]
)
async def test_empty_request_loads_and_keep_alive_zero_unloads_under_the_lease(
    live: Live, route: str, empty: str
) -> None:
    body: dict[str, Any] = {"model": "other-llm", empty: [] if empty == "messages" else ""}
    loaded = (await live.http.post(route, json=body)).json()
    assert loaded["done"] is True
    assert loaded["done_reason"] == "load"
    assert "other-llm" in live.backend.loaded
    unloaded = (await live.http.post(route, json={**body, "keep_alive": 0})).json()
    assert unloaded["done_reason"] == "unload"
    assert "other-llm" not in live.backend.loaded
    assert _lease_operations(live) == [
        ("load", "other-llm", "started"),
        ("load", "other-llm", "completed"),
        ("unload", "other-llm", "started"),
        ("unload", "other-llm", "completed"),
    ]


async def test_keep_alive_zero_with_a_prompt_unloads_after_answering(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    answer = await client.generate(model=MODEL, prompt="bye", keep_alive=0)
    assert answer.response == "echo: bye"
    assert MODEL not in live.backend.loaded
    assert [op for op, _, status in _lease_operations(live) if status == "completed"][-1] == (
        "unload"
    )


async def test_ps_reports_size_vram_expiry_and_the_lease(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    await client.generate(model=MODEL, prompt="")
    running = await client.ps()
    [entry] = running.models
    assert entry.model == MODEL
    assert entry.size_vram == 0
    assert entry.expires_at is not None
    assert entry.expires_at.year > 2300  # kept loaded until unloaded, as keep_alive -1 shows
    async with gpu_held(live.guard, "somebody-else"):
        raw = (await live.http.get("/api/ps")).json()
    assert raw["gpuguard"]["gpu"]["holder"]["operation"] == "somebody-else"
    assert raw["models"][0]["gpuguard"] == {"current": True, "holding_gpu": False}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        (-1, -1.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("-1s", -1.0),
        ("250ms", 0.25),
        (30, 30.0),
    ],
)
def test_keep_alive_durations(value: Any, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


# --- options and unsupported fields --------------------------------------------------------


def test_options_map_in_one_table() -> None:
    parameters = chat_parameters({"num_predict": 7, "temperature": 0.5, "num_ctx": 4096})
    assert parameters.options == ChatOptions(max_tokens=7, temperature=0.5)
    assert chat_parameters({"num_ctx": 2048, "top_k": None}).ignored == ("num_ctx",)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"options": {"top_k": 20}}, "options.top_k"),  # the fake backend has no top_k
        ({"options": {"tfs_z": 0.9}}, "options.tfs_z"),
        ({"options": {"typical_p": 0.5, "seed": 1}}, "options.typical_p"),
        ({"think": True}, "think"),
        ({"keep_alive": "soon"}, "keep_alive"),
        (
            {"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
            "messages[0].images",
        ),
    ],
)
async def test_unsupported_fields_are_a_400_naming_them(
    live: Live, body: dict[str, Any], named: str
) -> None:
    request = {"model": MODEL, "messages": HELLO, **body}
    response = await live.http.post("/api/chat", json=request)
    assert response.status_code == 400
    assert response.json() == {"error": response.json()["error"]}
    assert response.json()["error"].startswith(named)
    with pytest.raises(ollama.ResponseError) as refused:
        await ollama.AsyncClient(host=live.url).chat(**request)
    assert refused.value.status_code == 400
    assert named in refused.value.error
    assert live.backend.calls == []


async def test_server_side_options_are_accepted_and_reported(live: Live) -> None:
    # Continue sends num_ctx with every request: the server's configuration decides it.
    body = {"model": MODEL, "messages": HELLO, "stream": False, "options": {"num_ctx": 8192}}
    response = await live.http.post("/api/chat", json=body)
    assert response.status_code == 200
    assert response.headers["x-gpuguard-ignored-options"] == "num_ctx"
    embed = {"model": EMBEDDER, "input": "x", "options": {"num_thread": 2, "num_ctx": 512}}
    embedded = await live.http.post("/api/embed", json=embed)
    assert embedded.headers["x-gpuguard-ignored-options"] == "num_ctx,num_thread"
    refused = await live.http.post("/api/embed", json={**embed, "options": {"top_k": 1}})
    assert refused.status_code == 400


# --- errors in Ollama's shape --------------------------------------------------------------


async def test_unknown_model_is_a_404_in_ollamas_shape(live: Live) -> None:
    response = await live.http.post("/api/chat", json={"model": "nope", "messages": HELLO})
    assert response.status_code == 404
    assert list(response.json()) == ["error"]
    assert "nope" in response.json()["error"]
    with pytest.raises(ollama.ResponseError) as missing:
        await ollama.AsyncClient(host=live.url).generate(model="nope", prompt="x")
    assert missing.value.status_code == 404


@pytest.mark.parametrize(
    ("content", "status"),
    [(b'{"messages": []}', 400), (b'{"model": ', 400), (b"[]", 400)],
)
async def test_malformed_bodies_are_a_400_with_a_string_error(
    live: Live, content: bytes, status: int
) -> None:
    response = await live.http.post(
        "/api/chat", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert isinstance(response.json()["error"], str)


async def test_bodies_are_json_whatever_the_content_type(live: Live) -> None:
    # curl -d sends application/x-www-form-urlencoded, and Ollama reads JSON anyway.
    body = json.dumps({"model": MODEL, "prompt": "x", "stream": False})
    form = {"content-type": "application/x-www-form-urlencoded"}
    response = await live.http.post("/api/generate", content=body, headers=form)
    assert response.json()["response"] == "echo: x"


async def test_oversize_bodies_are_a_413_in_ollamas_shape(make_live: LiveFactory) -> None:
    async with make_live(max_body_bytes=2048) as live:
        big = {"model": MODEL, "prompt": "x" * 4096}
        response = await live.http.post("/api/generate", json=big)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


async def test_management_routes_are_a_501_without_ollama(live: Live) -> None:
    for method, path, body in [
        ("POST", "/api/pull", {"model": "llama3.2"}),
        ("POST", "/api/create", {"model": "mine", "from": MODEL}),
        ("DELETE", "/api/delete", {"model": MODEL}),
        ("POST", "/api/copy", {"source": MODEL, "destination": "copy"}),
    ]:
        response = await live.http.request(method, path, json=body)
        assert response.status_code == 501, path
        assert "'fake'" in response.json()["error"]
    with pytest.raises(ollama.ResponseError) as refused:
        await ollama.AsyncClient(host=live.url, headers=live.http.headers).pull("llama3.2")
    assert refused.value.status_code == 501


async def test_openai_errors_keep_their_own_shape(live: Live) -> None:
    response = await live.http.post(
        "/v1/chat/completions", json={"model": "nope", "messages": HELLO}
    )
    assert response.json()["error"]["code"] == "model_not_found"


async def test_the_web_page_stays_on_the_main_ports_root(live: Live) -> None:
    assert "html" in (await live.http.get("/")).headers["content-type"]
    assert (await live.http.head("/")).status_code == 200


async def test_http_errors_under_api_are_ollama_shaped(live: Live) -> None:
    response = await live.http.get("/api/nothing-here")
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


async def test_token_is_required_on_the_ollama_routes(make_live: LiveFactory) -> None:
    async with make_live(token="s3cret") as live:
        async with httpx.AsyncClient(base_url=live.url) as anonymous:
            refused = await anonymous.get("/api/tags")
        assert refused.status_code == 401
        assert isinstance(refused.json()["error"], str)
        client = ollama.AsyncClient(host=live.url, headers={"Authorization": "Bearer s3cret"})
        assert (await client.list()).models
