"""The shared HTTP layer: line parsing, URL normalisation, timeouts and the one error map."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gpuguard import (
    BackendBusy,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
)
from gpuguard.llm import Timeouts
from gpuguard.llm._framing import iter_ndjson, iter_sse_data
from gpuguard.llm._http import HttpClient, normalize_base_url
from gpuguard.llm._http_errors import Failure


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_sse_yields_data_and_stops_at_done() -> None:
    stream = lines(
        ": keep-alive comment",
        "event: message",
        'data: {"a": 1}',
        "",
        "data:first line",
        "data: second line",
        "id: 7",
        "",
        "data: [DONE]",
        "",
        'data: {"after": "done"}',
        "",
    )
    assert [d async for d in iter_sse_data(stream)] == ['{"a": 1}', "first line\nsecond line"]


async def test_sse_flushes_an_unterminated_last_event() -> None:
    assert [d async for d in iter_sse_data(lines('data: {"x": 1}'))] == ['{"x": 1}']


async def test_ndjson_skips_blank_lines() -> None:
    assert [x async for x in iter_ndjson(lines('{"a":1}', "", "  ", '{"b":2}'))] == [
        '{"a":1}',
        '{"b":2}',
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://localhost:1234/v1/", "http://localhost:1234"),
        (" http://h:1/ ", "http://h:1"),
        ("https://h/base", "https://h/base"),
    ],
)
def test_normalize_base_url(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


def test_normalize_rejects_a_non_http_url() -> None:
    with pytest.raises(ConfigError):
        normalize_base_url("localhost:11434")


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="load_s"):
        Timeouts(load_s=0)


def client_answering(status: int, body: object, classify: object = None) -> HttpClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return HttpClient(
        "http://server:1",
        backend="test",
        timeouts=Timeouts(),
        classify=classify,  # type: ignore[arg-type]
        transport=httpx.MockTransport(handler),
    )


@pytest.mark.parametrize(
    ("status", "body", "operation", "model", "expected"),
    [
        (503, {"error": "server busy, please try again."}, "chat", "m", BackendBusy),
        (429, {"error": {"message": "slow down"}}, "chat", "m", BackendBusy),
        (504, "gateway timeout", "chat", "m", BackendTimeout),
        (404, {"error": "model 'm' not found"}, "load", "m", ModelNotFound),
        (404, {"detail": "Not Found"}, "list", None, BackendProtocolError),
        (400, {"error": {"message": "x", "code": "model_not_found"}}, "chat", "m", ModelNotFound),
        (500, {"error": {"message": "out of memory"}}, "load", "m", ModelLoadFailed),
        (500, {"error": {"message": "oops"}}, "chat", "m", BackendProtocolError),
        (401, {"error": {"message": "bad key"}}, "chat", "m", BackendUnavailable),
    ],
)
async def test_status_codes_map_into_the_error_tree(
    status: int, body: object, operation: str, model: str | None, expected: type[BackendError]
) -> None:
    client = client_answering(status, body)
    with pytest.raises(expected) as caught:
        await client.json("GET", "/x", operation=operation, timeout=5, model=model)
    error = caught.value
    assert type(error) is expected
    assert error.status_code == status
    assert error.url == "http://server:1/x"
    assert error.backend == "test"
    assert error.model == model
    await client.aclose()


async def test_the_error_message_names_the_server_answer() -> None:
    client = client_answering(503, {"error": {"message": "Loading model", "type": "unavail"}})
    with pytest.raises(BackendBusy, match=r"HTTP 503 from http://server:1/x.*Loading model"):
        await client.request("GET", "/x", operation="chat", timeout=5)
    await client.aclose()


async def test_a_classifier_refines_the_defaults() -> None:
    def classify(failure: Failure) -> type[BackendError] | None:
        return ModelNotLoaded if "not loaded" in failure.message else None

    client = client_answering(400, {"error": {"message": "model is not loaded"}}, classify)
    with pytest.raises(ModelNotLoaded):
        await client.request("POST", "/v1/chat/completions", operation="chat", timeout=5)
    await client.aclose()


async def test_accepted_statuses_are_returned() -> None:
    client = client_answering(404, {"detail": "Not Found"})
    response = await client.request("GET", "/x", operation="detect", timeout=5, accept=(404,))
    assert response.status_code == 404
    await client.aclose()


async def test_non_json_answer_is_a_protocol_error() -> None:
    client = client_answering(200, "<html>proxy login</html>")
    with pytest.raises(BackendProtocolError, match="non-JSON"):
        await client.json("GET", "/x", operation="list", timeout=5)
    await client.aclose()


def test_in_band_errors_raise_when_decoded() -> None:
    client = client_answering(200, {})
    with pytest.raises(BackendProtocolError, match="boom") as caught:
        client.errors.decode_event('{"error": {"message": "boom"}}', operation="chat", model="m")
    assert caught.value.status_code is None
    with pytest.raises(BackendProtocolError, match="undecodable"):
        client.errors.decode_event("{not json", operation="chat", model="m")
    assert client.errors.decode_event('{"ok": 1}', operation="chat", model="m") == {"ok": 1}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), BackendUnavailable),
        (httpx.ReadTimeout("slow"), BackendTimeout),
        (httpx.RemoteProtocolError("peer closed"), BackendProtocolError),
    ],
)
async def test_transport_failures_map_into_the_error_tree(
    exc: httpx.HTTPError, expected: type[BackendError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    client = HttpClient(
        "http://server:1", backend="t", timeouts=Timeouts(), transport=httpx.MockTransport(handler)
    )
    with pytest.raises(expected, match="http://server:1/x") as caught:
        await client.request("GET", "/x", operation="load", timeout=5, model="m")
    assert caught.value.__cause__ is exc
    with pytest.raises(expected):
        await anext(client.stream_lines("/x", operation="chat", model="m", json_body={}))
    await client.aclose()


async def test_health_probe_never_raises() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client = HttpClient(
        "http://server:1", backend="t", timeouts=Timeouts(), transport=httpx.MockTransport(handler)
    )
    health = await client.probe("/health")
    assert not health.ok
    assert health.url == "http://server:1"
    assert "cannot reach http://server:1/health" in health.detail
    await client.aclose()
