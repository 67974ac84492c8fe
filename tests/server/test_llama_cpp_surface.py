"""The OpenAI surface over the real embedded llama.cpp on the generated tiny model (its
output is noise; the plumbing is what is tested): usage, long prompts and retrieval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from gpuguard.server import create_app, running_server
from gpuguard.server._runtime import build_gateway
from gpuguard.settings import load_settings

pytestmark = pytest.mark.slow

MODEL = "tiny-random"
EIGHTY_WORDS = " ".join(["How are the orders linked to the customers in this schema?"] * 8)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    settings = load_settings(
        data_dir=tmp_path,
        llm={"backend": "llama-cpp", "n_gpu_layers": 0},
        embeddings={"gpu_engine": "none", "cpu_engine": "hash"},
    )
    gateway = build_gateway(settings)
    passages = [
        f"passage {i}: " + "orders.customer_id references customers.id. " * 40 for i in range(8)
    ]

    async def retriever(question: str) -> list[str]:
        return passages

    app = create_app(settings, gateway=gateway, retriever=retriever)
    async with (
        running_server(app) as url,
        openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key=app.state.access.token, max_retries=0
        ) as client,
    ):
        yield client
    await gateway.aclose()


async def test_an_eighty_word_prompt_answers_with_usage(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": EIGHTY_WORDS}], max_tokens=8
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 80
    assert 0 < reply.usage.completion_tokens <= 9
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason in ("length", "stop")


async def test_a_prompt_beyond_the_context_is_a_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": EIGHTY_WORDS * 20}]
        )
    assert caught.value.code == "context_length_exceeded"


async def test_retrieval_fits_its_passages_into_the_context(client: openai.AsyncOpenAI) -> None:
    # Eight passages of ~1,800 tokens each cannot all fit in 4,096: the best ones that do are kept.
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "How are orders linked to customers?"}],
        max_tokens=16,
        extra_body={"retrieval": True},
    )
    assert reply.usage is not None
    assert 1000 < reply.usage.prompt_tokens <= 4096 - 16
