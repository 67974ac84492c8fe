"""The pieces every backend shares: the option mapping, the OpenAI chunk decoder, the stream
decoder, the listing GET and the error a backend builds for its own server."""

from __future__ import annotations

import json
from types import MappingProxyType

import httpx
import pytest

from gpuguard import BackendProtocolError, ModelLoadFailed, UnsupportedParameter
from gpuguard.llm import ChatChunk, ChatOptions, Timeouts
from gpuguard.llm._framing import iter_ndjson, iter_sse_data
from gpuguard.llm._http import HttpClient
from gpuguard.llm._openai_chunks import decode_chunk
from gpuguard.llm._protocol import checked_options

TOOL = {"type": "function", "function": {"name": "lookup"}}


def test_options_map_to_the_openai_wire_shape_asked_for_only() -> None:
    options = ChatOptions(
        max_tokens=5,
        stop=("a", "b"),
        tools=(MappingProxyType(TOOL),),
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        response_format=MappingProxyType({"type": "json_object"}),
    )
    wire = options.to_dict()
    assert wire == {
        "max_tokens": 5,
        "stop": ["a", "b"],
        "response_format": {"type": "json_object"},
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    }
    # Plain JSON types, whatever mappings the caller built the options from.
    assert type(wire["tools"][0]) is dict
    assert type(wire["response_format"]) is dict
    assert ChatOptions().to_dict() == {}


def test_checked_options_fills_the_defaults_and_refuses_the_unsupported() -> None:
    assert checked_options(None, frozenset(), backend="b", model="m") == ChatOptions()
    with pytest.raises(UnsupportedParameter) as caught:
        checked_options(ChatOptions(seed=1), frozenset({"top_p"}), backend="b", model="m")
    assert caught.value.param == "seed"


def test_the_chunk_decoder_skips_empty_deltas_and_keeps_usage_only_chunks() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    opening = {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
    assert decode_chunk(opening, usage=None) is None
    assert decode_chunk({"choices": [], "model": "m"}, usage=usage) == ChatChunk(
        content="", model="m", usage=usage
    )
    assert decode_chunk({"choices": []}, usage=None) is None
    last = {"model": "m", "choices": [{"delta": {}, "finish_reason": "stop"}]}
    assert decode_chunk(last, usage=None) == ChatChunk(content="", finish_reason="stop", model="m")


def client_streaming(body: str, status: int = 200) -> HttpClient:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body.encode())

    return HttpClient(
        "http://server:1", backend="t", timeouts=Timeouts(), transport=httpx.MockTransport(handle)
    )


async def test_stream_events_decodes_sse_and_ndjson_alike() -> None:
    events = [{"a": 1}, {"b": 2}]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    ndjson = "".join(json.dumps(e) + "\n" for e in events)
    for body, framing in ((sse, iter_sse_data), (ndjson, iter_ndjson)):
        client = client_streaming(body)
        got = client.stream_events("/x", framing, operation="chat", model="m", json_body={})
        assert [dict(event) async for event in got] == events
        await client.aclose()


async def test_stream_events_raises_an_in_band_error_and_a_non_object_event() -> None:
    client = client_streaming('{"a": 1}\n{"error": "model crashed"}\n')
    events = client.stream_events("/x", iter_ndjson, operation="chat", model="m", json_body={})
    assert await anext(events) == {"a": 1}
    with pytest.raises(BackendProtocolError, match="model crashed"):
        await anext(events)
    client = client_streaming("[1, 2]\n")
    events = client.stream_events("/x", iter_ndjson, operation="pull", model="m", json_body={})
    with pytest.raises(BackendProtocolError, match="t: pull stream sent a non-object") as caught:
        await anext(events)
    assert (caught.value.model, caught.value.url) == ("m", "http://server:1")
    await client.aclose()


@pytest.mark.parametrize("body", ['{"data": {"not": "a list"}}', "[]", ""])
async def test_listing_refuses_anything_but_a_list_under_its_key(body: str) -> None:
    client = client_streaming(body)
    with pytest.raises(BackendProtocolError, match="t: unexpected /models answer"):
        await client.listing("/models", "data", operation="list")
    await client.aclose()
    client = client_streaming('{"data": [{"id": "x"}]}')
    assert await client.listing("/models", "data", operation="list") == [{"id": "x"}]
    await client.aclose()


def test_a_fault_names_the_backend_its_url_and_the_model() -> None:
    client = client_streaming("")
    error = client.errors.fault(ModelLoadFailed, "gave up", model="m", status_code=404)
    assert type(error) is ModelLoadFailed
    assert str(error) == "t: gave up"
    assert (error.backend, error.model, error.url, error.status_code) == (
        "t",
        "m",
        "http://server:1",
        404,
    )
