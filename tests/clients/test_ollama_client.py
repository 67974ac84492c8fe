"""The official ``ollama`` client over real llama.cpp: llama.cpp's samplers in ``options``
reach the model, and what it cannot honour is refused by its Ollama name."""

from __future__ import annotations

import numpy as np
import ollama
import pytest

from gpuguard.embed import SentenceTransformerEmbedder

from .conftest import TINY, LlamaLive

SAMPLERS = {
    "top_k": 1,
    "min_p": 0.05,
    "typical_p": 0.95,
    "repeat_penalty": 1.1,
    "repeat_last_n": 32,
    "mirostat": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
}
HELLO = [{"role": "user", "content": "hello"}]


async def test_llama_cpp_samplers_in_options_reach_the_model(llama_live: LlamaLive) -> None:
    client = ollama.AsyncClient(host=llama_live.url)
    answers = set()
    for seed in (1, 2, 3):
        options = {**SAMPLERS, "seed": seed, "temperature": 1.5, "num_predict": 6}
        reply = await client.chat(model=TINY, messages=HELLO, options=options)
        answers.add(reply.message.content)
    assert len(answers) == 1  # top_k = 1: greedy whatever the seed
    streamed = [
        part
        async for part in await client.generate(
            model=f"{TINY}:latest", prompt="hi", options={**SAMPLERS, "mirostat": 2}, stream=True
        )
    ]
    assert streamed[-1].done


async def test_what_llama_cpp_cannot_honour_is_refused_by_its_ollama_name(
    llama_live: LlamaLive,
) -> None:
    client = ollama.AsyncClient(host=llama_live.url)
    for option, named in (
        ({"num_keep": 4}, "options.num_keep is not supported by the llama-cpp backend"),
        ({"tfs_z": 0.9}, "options.tfs_z is not supported: tail-free sampling"),
    ):
        with pytest.raises(ollama.ResponseError) as refused:
            await client.chat(model=TINY, messages=HELLO, options=option)
        assert refused.value.status_code == 400
        assert named in refused.value.error


async def test_the_embedder_answers_to_ollamas_names_and_is_listed_running_with_its_size(
    llama_live: LlamaLive, minilm: SentenceTransformerEmbedder
) -> None:
    client = ollama.AsyncClient(host=llama_live.url)
    truth = (await minilm.embed(["hello world"]))[0]
    for name in ("all-minilm", "all-minilm:latest", "all-MiniLM-L6-v2", minilm.name):
        answer = await client.embed(model=name, input=["hello world"])
        np.testing.assert_allclose(answer.embeddings[0], truth, atol=1e-5)
    running = {m.model: m for m in (await client.ps()).models}
    size = running[minilm.name].size
    assert size is not None
    assert size > 20_000_000  # the weights on disk, as Ollama's size is
    shown = await client.show("all-minilm")
    assert shown.capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError) as refused:
        await client.chat(model="all-minilm", messages=HELLO)
    assert refused.value.status_code == 400
    assert "embedding model" in refused.value.error
