"""Every bad-input path answers clear JSON: the OpenAI error shape on /v1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import openai
import pytest
import requests

from gpuguard import ConfigError, Priority
from gpuguard.settings import load_settings

from .conftest import MODEL, Live, LiveFactory, gpu_held, until


def assert_error_shape(body: object, code: str) -> None:
    assert isinstance(body, dict)
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]


async def test_malformed_json_is_400(live: Live) -> None:
    response = await live.http.post(
        "/v1/chat/completions",
        content=b'{"model": "fake-llm", "messages": [',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert_error_shape(response.json(), "bad_request")


async def test_missing_fields_name_the_field(live: Live) -> None:
    response = await live.http.post("/v1/chat/completions", json={"model": MODEL})
    assert response.status_code == 400
    assert_error_shape(response.json(), "bad_request")
    assert response.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 9},
        {"model": "", "messages": [{"role": "user", "content": "x"}]},
    ],
)
async def test_invalid_chat_bodies_are_400(live: Live, body: dict[str, object]) -> None:
    response = await live.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert_error_shape(response.json(), "bad_request")


async def test_unknown_model_is_404_for_the_openai_client(live: Live) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await live.client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert caught.value.code == "model_not_found"
    assert live.guard.current is None


async def test_unknown_embedding_model_is_404(live: Live) -> None:
    with pytest.raises(openai.NotFoundError):
        await live.client.embeddings.create(model="nope", input="x")


async def test_oversize_body_is_413(make_live: LiveFactory) -> None:
    async with make_live(max_body_bytes=2048) as live:
        big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 4096}]}
        response = await live.http.post("/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert_error_shape(response.json(), "request_too_large")

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * 1024

        streamed = await live.http.post(
            "/v1/chat/completions", content=chunked(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413


async def test_a_body_a_few_times_over_the_limit_gets_its_413_not_a_reset(
    make_live: LiveFactory,
) -> None:
    # requests (as scripts and the API fuzzer use it) sends the whole body before it reads
    # the answer. Unless the server reads what is still coming, closing the connection
    # resets it and the 413 is lost: "Connection broken: IncompleteRead".
    async with make_live(max_body_bytes=1_048_576) as live:
        url = f"{str(live.http.base_url).rstrip('/')}/v1/embeddings"
        body = b'{"model": "x", "input": [[' + b"0, " * 4_000_000 + b"0]]}"

        def upload() -> list[int]:
            with requests.Session() as session:
                headers = {"Content-Type": "application/json"}
                return [
                    session.post(url, data=body, headers=headers, timeout=30).status_code
                    for _ in range(8)
                ]

        assert await asyncio.to_thread(upload) == [413] * 8


async def test_bad_token_is_401(make_live: LiveFactory) -> None:
    async with make_live(token="s3cret") as live:
        assert (await live.client.models.list()).data
        bad = live.client.with_options(api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
        response = await live.http.get("/admin/gpu", headers={"Authorization": "Bearer no"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        no_header = {"Authorization": ""}
        events = await live.http.get("/events", params={"token": "no"}, headers=no_header)
        assert events.status_code == 401
        assert (await live.http.get("/")).status_code == 200  # the page itself is public


async def test_queue_full_is_503_with_retry_after(make_live: LiveFactory) -> None:
    async with make_live(max_waiters=1) as live, gpu_held(live.guard):
        queued = asyncio.create_task(live.guard.acquire("queued", priority=Priority.BACKGROUND))
        await until(lambda: live.guard.queue_length == 1)
        with pytest.raises(openai.APIStatusError) as caught:
            await live.client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.status_code == 503
        assert int(caught.value.response.headers["Retry-After"]) >= 1
        assert caught.value.code == "gpu_queue_full"
    (await queued).release()


async def test_a_streamed_chat_gets_503_with_retry_after_when_the_queue_is_full(
    make_live: LiveFactory,
) -> None:
    # The queue place is reserved before the first byte: a full queue is a 503, never a 200
    # followed by an error frame.
    async with make_live(max_waiters=1) as live, gpu_held(live.guard):
        queued = asyncio.create_task(live.guard.acquire("queued", priority=Priority.BACKGROUND))
        await until(lambda: live.guard.queue_length == 1)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with live.http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) >= 1
            error = json.loads(await response.aread())["error"]
        assert error["code"] == "gpu_queue_full"
        with pytest.raises(openai.APIStatusError) as caught:
            await live.client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        assert caught.value.status_code == 503
    (await queued).release()


async def test_errors_off_v1_carry_context(live: Live) -> None:
    response = await live.http.post("/admin/models/load", json={"model": "nope"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["context"]["model"] == "nope"
    missing = await live.http.get("/admin/nothing-here")
    assert missing.status_code == 404
    assert_error_shape(missing.json(), "not_found")


async def test_jobs_without_a_job_manager_is_a_clear_400(live: Live) -> None:
    response = await live.http.post(
        "/admin/jobs/schema-refresh", json={"database_url": "sqlite:///x.db"}
    )
    assert response.status_code == 400
    assert "no job manager" in response.json()["error"]["message"]


async def test_retrieval_without_an_index_is_400(live: Live) -> None:
    with pytest.raises(openai.BadRequestError):
        await live.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"retrieval": True},
        )


def test_non_loopback_host_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="bearer token"):
        load_settings(server={"host": "0.0.0.0"})
    assert load_settings(server={"host": "0.0.0.0", "token": "t"}).server.host == "0.0.0.0"


def test_every_error_maps_through_its_own_category_and_code() -> None:
    # The server lists categories, not classes: an error added to the tree needs no change here.
    from gpuguard import _exceptions
    from gpuguard.server._errors import kind_of

    errors = [
        cls
        for cls in vars(_exceptions).values()
        if isinstance(cls, type) and issubclass(cls, _exceptions.GpuGuardError)
    ]
    assert len(errors) > 30
    for cls in errors:
        error = cls.__new__(cls)
        kind = kind_of(error)
        assert kind.code == cls.code
        assert 400 <= kind.status < 600
    assert kind_of(_exceptions.QueueFull.__new__(_exceptions.QueueFull)).status == 503
    assert kind_of(_exceptions.ModelNotFound.__new__(_exceptions.ModelNotFound)).status == 404
