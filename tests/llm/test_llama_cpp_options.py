"""Real llama.cpp on the tiny model: usage counted with its tokenizer, a too-long prompt is
a ContextLengthExceeded (not a 502), and options reach ``create_chat_completion``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from gpuguard import ContextLengthExceeded, UnsupportedParameter
from gpuguard.llm import ChatMessage, ChatOptions, LlamaCppBackend
from gpuguard.llm._llama_host import LlamaHost
from gpuguard.llm.llama_cpp_embedded import completion_arguments

from ._support import HELLO, collect

pytestmark = pytest.mark.slow


@pytest.fixture
async def tiny(llama_cpp: ModuleType, tiny_gguf: Path) -> AsyncIterator[LlamaCppBackend]:
    backend = LlamaCppBackend(tiny_gguf, n_gpu_layers=0, n_ctx=256)
    await backend.load("tiny")
    yield backend
    await backend.aclose()


async def test_usage_is_counted_with_the_model_tokenizer(tiny: LlamaCppBackend) -> None:
    chunks = await collect(tiny.chat("tiny", HELLO, ChatOptions(max_tokens=5, seed=1)))
    usage = chunks[-1].usage
    assert usage is not None
    prompt = await tiny.count_tokens("tiny", HELLO)
    assert prompt is not None
    assert prompt > 0
    assert usage["prompt_tokens"] == prompt
    assert 0 < usage["completion_tokens"] <= 5 + 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_a_prompt_longer_than_the_context_is_refused(tiny: LlamaCppBackend) -> None:
    long = [ChatMessage("user", "orders customers regions " * 200)]
    with pytest.raises(ContextLengthExceeded) as caught:
        await collect(tiny.chat("tiny", long))
    assert caught.value.param == "messages"
    assert "256" in str(caught.value)
    with pytest.raises(ContextLengthExceeded):
        await collect(tiny.chat("tiny", HELLO, ChatOptions(max_tokens=1000)))


async def test_n_above_one_is_refused(tiny: LlamaCppBackend) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        await collect(tiny.chat("tiny", HELLO, ChatOptions(n=2)))
    assert caught.value.param == "n"


async def test_stop_and_seed_are_honoured(tiny: LlamaCppBackend) -> None:
    options = ChatOptions(max_tokens=12, seed=42, temperature=0.8)
    first = "".join(c.content for c in await collect(tiny.chat("tiny", HELLO, options)))
    again = "".join(c.content for c in await collect(tiny.chat("tiny", HELLO, options)))
    assert first == again  # same seed, same noise
    assert first, "the random model produced no text"
    stop = first.strip()[:1]
    stopped = await collect(
        tiny.chat("tiny", HELLO, ChatOptions(max_tokens=12, seed=42, temperature=0.8, stop=(stop,)))
    )
    assert stop not in "".join(c.content for c in stopped)


def test_every_option_becomes_a_create_chat_completion_argument() -> None:
    options = ChatOptions(
        max_tokens=3,
        stop=("a",),
        tools=({"type": "function", "function": {"name": "f"}},),
        tool_choice="auto",
        response_format={"type": "json_object"},
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        top_p=0.9,
    )
    arguments = completion_arguments(HELLO, options)
    assert arguments["stop"] == ["a"]
    assert arguments["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert arguments["response_format"] == {"type": "json_object"}
    assert (arguments["logprobs"], arguments["top_logprobs"]) == (True, 2)
    assert arguments["stream"] is True


def test_llama_cpp_samplers_become_its_own_arguments() -> None:
    options = ChatOptions(
        top_k=7,
        min_p=0.1,
        typical_p=0.9,
        repeat_penalty=1.3,
        repeat_last_n=16,
        mirostat=2,
        mirostat_tau=4.0,
        mirostat_eta=0.2,
    )
    arguments = completion_arguments(HELLO, options)
    assert arguments["mirostat_mode"] == 2  # llama-cpp-python's name for the mode
    assert "mirostat" not in arguments
    assert {k: arguments[k] for k in ("top_k", "min_p", "typical_p", "repeat_penalty")} == {
        "top_k": 7,
        "min_p": 0.1,
        "typical_p": 0.9,
        "repeat_penalty": 1.3,
    }
    assert arguments["repeat_last_n"] == 16  # applied by the worker's host, not an argument


async def test_top_k_reaches_the_sampler(tiny: LlamaCppBackend) -> None:
    async def answer(seed: int, top_k: int | None = None) -> str:
        options = ChatOptions(max_tokens=8, seed=seed, temperature=1.5, top_k=top_k)
        return "".join(c.content for c in await collect(tiny.chat("tiny", HELLO, options)))

    free = {await answer(seed) for seed in range(1, 5)}
    greedy = {await answer(seed, top_k=1) for seed in range(1, 5)}
    assert len(free) > 1  # the seed matters when sampling from every token...
    assert len(greedy) == 1  # ...and not once top_k = 1 leaves one token to pick


async def test_every_sampler_of_llama_cpp_runs(tiny: LlamaCppBackend) -> None:
    options = ChatOptions(
        max_tokens=4,
        top_k=5,
        min_p=0.1,
        typical_p=0.9,
        repeat_penalty=1.2,
        repeat_last_n=-1,
        mirostat=2,
        mirostat_tau=4.0,
        mirostat_eta=0.2,
    )
    chunks = await collect(tiny.chat("tiny", HELLO, options))
    assert chunks[-1].finish_reason in ("stop", "length")
    with pytest.raises(UnsupportedParameter) as refused:
        await collect(tiny.chat("tiny", HELLO, ChatOptions(n_keep=4)))
    assert refused.value.param == "n_keep"


def test_repeat_last_n_is_set_for_one_chat(llama_cpp: ModuleType, tiny_gguf: Path) -> None:
    host = LlamaHost(str(tiny_gguf), 0, 128, False)
    try:
        loaded = host._llama.last_n_tokens_size
        list(
            host.chat(
                {"messages": [m.to_dict() for m in HELLO], "max_tokens": 2, "repeat_last_n": 9}
            )
        )
        assert host._llama.last_n_tokens_size == 9
        list(host.chat({"messages": [m.to_dict() for m in HELLO], "max_tokens": 2}))
        assert host._llama.last_n_tokens_size == loaded
        list(
            host.chat(
                {"messages": [m.to_dict() for m in HELLO], "max_tokens": 2, "repeat_last_n": -1}
            )
        )
        assert host._llama.last_n_tokens_size == host._llama.n_ctx()  # the whole context
    finally:
        host.close()
