"""Token-array input: each engine decodes ids of its model's own tokenizer, refuses ids
outside its vocabulary by name, and an engine without a tokenizer refuses token arrays."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gpuguard import InvalidRequest, UnsupportedParameter
from gpuguard.embed import (
    Embedder,
    FastEmbedEmbedder,
    ProcessEmbedder,
    RemoteEmbedder,
    SentenceTransformerEmbedder,
    create_embedder,
)
from gpuguard.testing import HashEmbedder

# all-MiniLM-L6-v2's (BERT uncased) tokenizer: [CLS] hello world [SEP]
HELLO_WORLD = [101, 7592, 2088, 102]
VOCAB = 30522


@pytest.fixture(scope="module")
def minilm_in_process() -> Iterator[ProcessEmbedder]:
    embedder = create_embedder("sentence-transformers", device="cpu", process=True)
    assert isinstance(embedder, ProcessEmbedder)
    yield embedder
    asyncio.run(embedder.aclose())


async def _check_minilm_tokenizer(embedder: Embedder) -> None:
    assert await embedder.decode([HELLO_WORLD, [7592]]) == ["hello world", "hello"]
    with pytest.raises(InvalidRequest) as refused:
        await embedder.decode([HELLO_WORLD, [7592, VOCAB]])
    assert refused.value.param == "input"
    assert f"token id {VOCAB}" in str(refused.value)
    assert f"{VOCAB} tokens" in str(refused.value)
    assert "model's own tokenizer" in str(refused.value)


async def test_sentence_transformers_decodes_with_its_tokenizer(
    minilm_cpu: SentenceTransformerEmbedder,
) -> None:
    await _check_minilm_tokenizer(minilm_cpu)
    by_ids = await minilm_cpu.embed(await minilm_cpu.decode([HELLO_WORLD]))
    np.testing.assert_allclose(by_ids, await minilm_cpu.embed(["hello world"]), atol=1e-6)


async def test_fastembed_decodes_with_its_tokenizer(onnx_dir: Path) -> None:
    embedder = FastEmbedEmbedder(model_path=onnx_dir, device="cpu")
    try:
        await _check_minilm_tokenizer(embedder)
    finally:
        await embedder.aclose()


async def test_the_process_embedder_decodes_in_its_worker(
    minilm_in_process: ProcessEmbedder,
) -> None:
    await _check_minilm_tokenizer(minilm_in_process)


async def test_the_hashing_embedder_reads_id_n_as_the_word_tok_n() -> None:
    embedder = HashEmbedder(vocab_size=10)
    assert await embedder.decode([[1, 2], [9]]) == ["tok1 tok2", "tok9"]
    with pytest.raises(InvalidRequest, match="token id -1"):
        await embedder.decode([[-1]])
    with pytest.raises(InvalidRequest, match=r"token id 10,.*\(10 tokens"):
        await embedder.decode([[10]])


async def test_a_remote_engine_has_no_tokenizer_here() -> None:
    remote = RemoteEmbedder("http://127.0.0.1:9", model="far-away", dimension=8)
    with pytest.raises(UnsupportedParameter) as refused:
        await remote.decode([[1, 2]])
    assert refused.value.param == "input"
    assert "tokenizer" in str(refused.value)
