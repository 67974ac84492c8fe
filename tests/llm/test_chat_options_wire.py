"""Each remote backend forwards every chat option in its server's wire format, refuses what
its server cannot do, and turns streamed tool calls and usage into ChatChunks."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gpuguard import ContextLengthExceeded, UnsupportedParameter
from gpuguard.llm import (
    ChatMessage,
    ChatOptions,
    FoundryLocalBackend,
    OllamaBackend,
    OpenAICompatBackend,
)

from ._support import HELLO, collect

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
EVERYTHING = ChatOptions(
    max_tokens=5,
    temperature=0.2,
    top_p=0.9,
    stop=("END",),
    seed=3,
    presence_penalty=0.1,
    frequency_penalty=0.2,
    response_format={
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}},
    },
    tools=(TOOL,),
    tool_choice="auto",
)


class Recorder:
    """A mock transport answering with a scripted body and keeping every request body."""

    def __init__(self, answer: str, media_type: str) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._answer = answer
        self._media_type = media_type

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.bodies.append(json.loads(request.content))
            return httpx.Response(
                200, content=self._answer.encode(), headers={"Content-Type": self._media_type}
            )

        return httpx.MockTransport(handle)


def sse(*events: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


async def test_openai_servers_get_every_option_and_stream_tool_calls() -> None:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "lookup"}}
    more = {"index": 0, "function": {"arguments": '{"q": 1}'}}
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    recorder = Recorder(
        sse(
            {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]},
            {"choices": [{"delta": {"tool_calls": [call]}, "finish_reason": None}]},
            {"choices": [{"delta": {"tool_calls": [more]}, "finish_reason": "tool_calls"}]},
            {"choices": [], "usage": usage},
        ),
        "text/event-stream",
    )
    backend = OpenAICompatBackend("http://127.0.0.1:9", transport=recorder.transport())
    chunks = await collect(backend.chat("m", HELLO, EVERYTHING))
    await backend.aclose()
    [body] = recorder.bodies
    assert body["stop"] == ["END"]
    assert body["tools"] == [TOOL]
    assert body["response_format"]["type"] == "json_schema"
    assert (body["seed"], body["top_p"], body["max_tokens"]) == (3, 0.9, 5)
    assert body["stream_options"] == {"include_usage": True}
    assert "n" not in body
    assert [c.tool_calls for c in chunks if c.tool_calls] == [(call,), (more,)]
    assert chunks[1].finish_reason == "tool_calls"
    assert chunks[-1].usage == usage


async def test_ollama_gets_options_format_and_tools_and_streams_tool_calls() -> None:
    lines = [
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "lookup", "arguments": {"q": 1}}}],
            },
            "done": False,
        },
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 7,
            "eval_count": 3,
        },
    ]
    recorder = Recorder("".join(json.dumps(line) + "\n" for line in lines), "application/x-ndjson")
    backend = OllamaBackend("http://127.0.0.1:9", transport=recorder.transport())
    earlier = ChatMessage(
        "assistant",
        "",
        tool_calls=(
            {
                "id": "c0",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": 0}'},
            },
        ),
    )
    chunks = await collect(backend.chat("m", [*HELLO, earlier], EVERYTHING))
    await backend.aclose()
    [body] = recorder.bodies
    assert body["options"] == {
        "num_predict": 5,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 3,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "stop": ["END"],
    }
    assert body["format"] == {"type": "object"}
    assert body["tools"] == [TOOL]
    assert body["messages"][-1]["tool_calls"] == [
        {"function": {"name": "lookup", "arguments": {"q": 0}}}
    ]
    [delta] = chunks[0].tool_calls
    assert delta["function"] == {"name": "lookup", "arguments": '{"q": 1}'}
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@pytest.mark.parametrize(
    ("options", "param"),
    [
        (ChatOptions(logprobs=True), "logprobs"),
        (ChatOptions(n=3), "n"),
        (ChatOptions(tool_choice="required", tools=(TOOL,)), "tool_choice"),
    ],
)
async def test_ollama_refuses_what_it_cannot_do(options: ChatOptions, param: str) -> None:
    recorder = Recorder("", "application/x-ndjson")
    backend = OllamaBackend("http://127.0.0.1:9", transport=recorder.transport())
    with pytest.raises(UnsupportedParameter) as caught:
        await collect(backend.chat("m", HELLO, options))
    await backend.aclose()
    assert caught.value.param == param
    assert recorder.bodies == []  # refused before anything was sent


async def test_foundry_refuses_logprobs_before_sending() -> None:
    recorder = Recorder("", "text/event-stream")
    backend = FoundryLocalBackend("http://127.0.0.1:9", transport=recorder.transport())
    with pytest.raises(UnsupportedParameter) as caught:
        await collect(backend.chat("m", HELLO, ChatOptions(logprobs=True, top_logprobs=2)))
    await backend.aclose()
    assert caught.value.param == "logprobs"
    assert recorder.bodies == []


@pytest.mark.parametrize(
    "error",
    [
        {
            "code": 400,
            "type": "exceed_context_size_error",
            "message": "the request exceeds the available context size, try increasing it",
        },
        {
            "message": "This model's maximum context length is 2048 tokens. However, you "
            "requested 4000 tokens.",
            "type": "BadRequestError",
            "code": 400,
        },
        {"message": "too long", "code": "context_length_exceeded"},
    ],
)
async def test_a_server_refusing_a_long_prompt_is_context_length_exceeded(
    error: dict[str, Any],
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": error})

    backend = OpenAICompatBackend("http://127.0.0.1:9", transport=httpx.MockTransport(handle))
    with pytest.raises(ContextLengthExceeded) as caught:
        await collect(backend.chat("m", HELLO))
    await backend.aclose()
    assert caught.value.param == "messages"
