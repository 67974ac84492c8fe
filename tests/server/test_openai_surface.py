"""The whole OpenAI surface through the official openai client: every chat parameter is
forwarded or refused, tool calls stream back, usage and finish reasons are right, and the
routes clients probe exist."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from gpuguard.testing import FakeBackend

from .conftest import MODEL, Live, LiveFactory

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"n": 2}, "n"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
async def test_a_parameter_the_backend_cannot_honour_is_a_400_naming_it(
    live: Live, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await live.client.chat.completions.create(model=MODEL, messages=HI, extra_body=extra)
    assert caught.value.code == "unsupported_parameter"
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert param in body["message"]
    assert live.guard.current is None


async def test_supported_parameters_reach_the_backend(live: Live) -> None:
    reply = await live.client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "one two STOP three"}],
        stop="STOP",
        seed=7,
        top_p=0.5,
        temperature=0.1,
        user="someone",  # metadata: accepted, changes nothing
    )
    options = live.backend.options[-1]
    assert (options.stop, options.seed, options.top_p, options.temperature) == (
        ("STOP",),
        7,
        0.5,
        0.1,
    )
    assert reply.choices[0].message.content == "echo: one two"


async def test_usage_and_finish_reason_length(live: Live) -> None:
    reply = await live.client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2)
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "echo: hello"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 2)
    assert reply.usage.total_tokens == 4


async def test_streamed_usage_comes_last_when_asked_for(live: Live) -> None:
    stream = await live.client.chat.completions.create(
        model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 2 + 3
    plain = await live.client.chat.completions.create(model=MODEL, messages=HI, stream=True)
    assert all(chunk.usage is None for chunk in [c async for c in plain])


async def test_tool_calls_stream_back(live: Live) -> None:
    stream = await live.client.chat.completions.create(
        model=MODEL, messages=HI, tools=[TOOL], tool_choice="required", stream=True
    )
    name, arguments, finish = "", "", None
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                assert call.index == 0
                name += (call.function and call.function.name) or ""
                arguments += (call.function and call.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert name == "lookup"
    assert json.loads(arguments) == {"text": "hello there"}
    assert finish == "tool_calls"


async def test_tool_calls_in_a_whole_answer_and_the_next_turn(live: Live) -> None:
    reply = await live.client.chat.completions.create(
        model=MODEL,
        messages=HI,
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "lookup"
    follow_up = await live.client.chat.completions.create(
        model=MODEL,
        messages=[
            *HI,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "a greeting"},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert follow_up.choices[0].message.content == "echo: thanks"


async def test_a_prompt_longer_than_the_context_is_a_400(make_live: LiveFactory) -> None:
    backend = FakeBackend([MODEL], context_length=8)
    async with make_live(backend=backend) as live:
        with pytest.raises(openai.BadRequestError) as caught:
            await live.client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "word " * 20}]
            )
    assert caught.value.code == "context_length_exceeded"


async def test_retrieval_drops_the_lowest_ranked_passages_to_fit(
    make_live: LiveFactory,
) -> None:
    passages = ["alpha " * 10, "beta " * 10, "gamma " * 10]

    async def retriever(question: str) -> list[str]:
        return list(passages)

    backend = FakeBackend([MODEL], context_length=40)
    async with make_live(backend=backend, retriever=retriever) as live:
        reply = await live.client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=5, extra_body={"retrieval": True}
        )
    assert reply.choices[0].message.content == "echo: hello there"
    # 35 tokens of room: the question (2), the preamble (8) and two passages (11 each).
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 2 + 8 + 11 + 11


async def test_models_by_id(live: Live) -> None:
    model = await live.client.models.retrieve(MODEL)
    assert model.id == MODEL
    with pytest.raises(openai.NotFoundError):
        await live.client.models.retrieve("no-such-model")


async def test_text_completions(live: Live) -> None:
    reply = await live.client.completions.create(model=MODEL, prompt="one two three")
    assert reply.choices[0].text == "echo: one two three"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == 3 + 4
    stream = await live.client.completions.create(
        model=MODEL, prompt="one two three", max_tokens=2, stream=True
    )
    pieces = [chunk.choices[0] async for chunk in stream]
    assert "".join(p.text for p in pieces) == "echo: one"
    assert pieces[-1].finish_reason == "length"
    for refused in ({"echo": True}, {"best_of": 2}, {"logprobs": 1}, {"suffix": "!"}):
        with pytest.raises(openai.BadRequestError) as caught:
            await live.client.completions.create(model=MODEL, prompt="x", extra_body=refused)
        assert caught.value.code == "unsupported_parameter"
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == next(iter(refused))


async def test_health_and_ready(live: Live) -> None:
    assert (await live.http.get("/health")).json() == {"status": "ok", "server": "gpuguard"}
    live.backend.loaded.clear()
    not_ready = await live.http.get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["model_loaded"] is False
    await live.gateway.load(MODEL)
    ready = await live.http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_a_malformed_body_says_where(live: Live) -> None:
    response = await live.http.post(
        "/v1/chat/completions",
        content=b'{"model": , "messages": []}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "body: invalid JSON at line 1 column 11" in message
    assert response.json()["error"]["param"] is None


async def test_field_errors_name_the_field_path(live: Live) -> None:
    response = await live.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}, 3]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[1]"
    missing = await live.http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user"}]}
    )
    assert missing.status_code == 400
    assert "content is required" in missing.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "messages": HI, "retrieval": 0},
        {"model": MODEL, "messages": HI, "stream": "yes"},
    ],
)
async def test_flags_must_be_booleans(live: Live, body: dict[str, Any]) -> None:
    response = await live.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400


async def test_openapi_lists_the_errors_the_server_gives(live: Live) -> None:
    schema = (await live.http.get("/openapi.json")).json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in chat
    assert {"400", "404"} <= set(chat)
    assert chat["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    embeddings = schema["components"]["schemas"]["EmbeddingRequest"]
    input_schemas = embeddings["properties"]["input"]["anyOf"]
    assert all(s.get("minItems", 1) >= 1 for s in input_schemas if s.get("type") == "array")
