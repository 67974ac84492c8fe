"""Ollama's ``options``, ``format`` and ``tools`` reach the backend as :class:`ChatOptions`,
tool calls come back in Ollama's shape, and what cannot be honoured is a 400 naming it."""

from __future__ import annotations

import json
import warnings
from typing import Any

import ollama
import pytest

from gpuguard.llm import ChatMessage, ChatOptions
from gpuguard.llm._protocol import LLAMA_CPP_SAMPLERS, OPENAI_CHAT_PARAMETERS
from gpuguard.server._ollama_conversation import OllamaMessage, conversation
from gpuguard.server._ollama_options import chat_parameters
from gpuguard.testing import FakeBackend

from .conftest import MODEL, Live, LiveFactory

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}
EVERY_OPTION = {
    "num_predict": 5,
    "temperature": 0.2,
    "top_p": 0.9,
    "stop": ["halt"],
    "seed": 42,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "top_k": 20,
    "min_p": 0.05,
    "typical_p": 0.9,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "mirostat": 2,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
    "num_keep": 4,
}
EVERY_CHAT_OPTION = ChatOptions(
    max_tokens=5,
    temperature=0.2,
    top_p=0.9,
    stop=("halt",),
    seed=42,
    presence_penalty=0.5,
    frequency_penalty=-0.5,
    top_k=20,
    min_p=0.05,
    typical_p=0.9,
    repeat_penalty=1.1,
    repeat_last_n=64,
    mirostat=2,
    mirostat_tau=5.0,
    mirostat_eta=0.1,
    n_keep=4,
)


def _ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _open_backend() -> FakeBackend:
    """A fake that takes every option llama-server takes: OpenAI's and llama.cpp's samplers."""
    return FakeBackend([MODEL], chat_parameters=OPENAI_CHAT_PARAMETERS | LLAMA_CPP_SAMPLERS)


def test_one_mapping_of_options_format_and_tools() -> None:
    parameters = chat_parameters(
        {**EVERY_OPTION, "num_ctx": 4096, "tfs_z": None}, format=SCHEMA, tools=None
    )
    assert parameters.ignored == ("num_ctx",)
    assert parameters.options == ChatOptions(
        **{
            **{name: getattr(EVERY_CHAT_OPTION, name) for name in EVERY_CHAT_OPTION.given()},
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": SCHEMA},
            },
        }
    )
    assert chat_parameters(None, format="json").options == ChatOptions(
        response_format={"type": "json_object"}
    )
    assert chat_parameters({"num_predict": -1, "stop": "x"}).options == ChatOptions(stop=("x",))


async def test_every_option_reaches_the_backend_through_the_client(
    make_live: LiveFactory,
) -> None:
    async with make_live(backend=_open_backend()) as live:
        client = ollama.AsyncClient(host=live.url)
        prompt = [{"role": "user", "content": "one two halt three"}]
        answer = await client.chat(model=MODEL, messages=prompt, options=EVERY_OPTION)
        assert answer.message.content == "echo: one two"
        assert live.backend.options[-1] == EVERY_CHAT_OPTION
        await client.chat(model=MODEL, messages=prompt, format=SCHEMA, tools=[TOOL])
        sent = live.backend.options[-1]
        assert sent.response_format == {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": SCHEMA},
        }
        assert sent.tools == (TOOL,)
        generated = await live.http.post(
            "/api/generate",
            json={"model": MODEL, "prompt": "a b", "format": "json", "options": {"seed": 7}},
        )
        assert generated.status_code == 200
        assert live.backend.options[-1] == ChatOptions(
            seed=7, response_format={"type": "json_object"}
        )


async def test_tool_calls_come_back_in_ollamas_shape(live: Live) -> None:
    client = ollama.AsyncClient(host=live.url)
    asked = [{"role": "user", "content": "please lookup cats"}]
    answer = await client.chat(model=MODEL, messages=asked, tools=[TOOL])
    [call] = answer.message.tool_calls or []
    assert call.function.name == "lookup"
    assert call.function.arguments == {"text": "please lookup cats"}
    assert answer.done_reason == "stop"
    parts = [
        part
        async for part in await client.chat(model=MODEL, messages=asked, tools=[TOOL], stream=True)
    ]
    called = [call for part in parts for call in part.message.tool_calls or ()]
    assert [(c.function.name, c.function.arguments) for c in called] == [
        ("lookup", {"text": "please lookup cats"})
    ]
    assert parts[-1].done


async def test_tool_calls_on_the_wire(live: Live) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "lookup dogs"}],
        "tools": [TOOL],
    }
    streamed = await live.http.post("/api/chat", json=body)
    lines = _ndjson(streamed.text)
    assert [line["done"] for line in lines] == [False, True]
    assert lines[0]["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "lookup", "arguments": {"text": "lookup dogs"}}}],
    }
    assert lines[1]["done_reason"] == "stop"
    whole = await live.http.post("/api/chat", json={**body, "stream": False})
    assert whole.json()["message"]["tool_calls"] == lines[0]["message"]["tool_calls"]


def test_a_tool_round_trip_keeps_calls_and_answers_paired() -> None:
    turns = [
        OllamaMessage(role="user", content="weather?"),
        OllamaMessage.model_validate(
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "city", "arguments": {}}},
                    {"function": {"name": "weather", "arguments": {"city": "Oslo"}}},
                ],
            }
        ),
        OllamaMessage(role="tool", content="rain", tool_name="weather"),
        OllamaMessage(role="tool", content="Oslo"),
    ]
    messages = conversation(turns)
    assert messages[1].tool_calls[1] == {
        "id": "call_1_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    }
    assert messages[2:] == [
        ChatMessage("tool", "rain", tool_call_id="call_1_1"),
        ChatMessage("tool", "Oslo", tool_call_id="call_1_0"),
    ]


@pytest.mark.parametrize(
    ("route", "body", "named"),
    [
        ("chat", {"options": {"bogus": 1, "new_topic_penalty": 1}}, "options.bogus, options.new"),
        ("chat", {"options": {"tfs_z": 0.9}}, "options.tfs_z is not supported: tail-free"),
        ("chat", {"options": {"penalize_newline": True}}, "options.penalize_newline is not"),
        ("chat", {"options": {"mirostat": 3}}, "options.mirostat must be between 0 and 2"),
        ("chat", {"options": {"top_k": 1.5}}, "options.top_k must be an integer"),
        # The fake takes none of llama.cpp's samplers: refused by the backend, by its name.
        ("chat", {"options": {"top_k": 20}}, "options.top_k is not supported by the fake"),
        ("chat", {"options": {"num_keep": 4}}, "options.num_keep is not supported by the fake"),
        ("chat", {"options": {"top_p": 2}}, "options.top_p must be between 0.0 and 1.0"),
        ("chat", {"options": {"stop": [1]}}, "options.stop must be a list"),
        (
            "chat",
            {"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
            "messages[0].images are not supported",
        ),
        ("chat", {"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ("generate", {"images": ["aGk="]}, "images are not supported"),
        # Refused by the backend (the fake takes neither), named as the client sent them.
        (
            "chat",
            {"options": {"presence_penalty": 1}},
            "options.presence_penalty is not supported by the fake backend",
        ),
        ("generate", {"format": "json"}, "format is not supported by the fake backend"),
    ],
)
async def test_what_cannot_be_honoured_is_a_400_naming_it(
    live: Live, route: str, body: dict[str, Any], named: str
) -> None:
    start = {"messages": [{"role": "user", "content": "hi"}]} if route == "chat" else {}
    request = {"model": MODEL, **start, "prompt": "hi", **body}
    response = await live.http.post(f"/api/{route}", json=request)
    assert response.status_code == 400
    assert list(response.json()) == ["error"]
    assert response.json()["error"].startswith(named)
    client = ollama.AsyncClient(host=live.url)
    call = client.chat if route == "chat" else client.generate
    fields = {k: v for k, v in request.items() if k != ("prompt" if route == "chat" else "")}
    with pytest.raises(ollama.ResponseError) as refused:
        await call(**fields)
    assert refused.value.status_code == 400
    assert named in refused.value.error
    assert live.backend.options == [], "nothing was generated"


async def test_version_answers_get_and_head_with_distinct_operation_ids(live: Live) -> None:
    assert (await live.http.head("/api/version")).status_code == 200
    assert (await live.http.get("/api/version")).json()["version"]
    live.app.openapi_schema = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        live.app.openapi()
    # A ResourceWarning here is some earlier test's socket collected now, not the schema's.
    assert [str(w.message) for w in caught if w.category is not ResourceWarning] == []


async def test_a_format_other_than_json_or_a_schema_is_a_400(live: Live) -> None:
    # The official client refuses it before sending; other clients may not.
    body = {"model": MODEL, "prompt": "hi", "format": "xml"}
    response = await live.http.post("/api/generate", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "error": "format must be \"json\" or a JSON schema object, got 'xml'"
    }
