"""LangChain's ``OpenAIEmbeddings`` with its defaults: it sends tiktoken (cl100k_base) token
arrays, and gets the vectors of the texts they stand for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from gpuguard.embed import SentenceTransformerEmbedder
from tests.server.conftest import Live

TEXTS = [
    "hello world",
    "the cat sat on the mat",
    "Ünïcödé text: naïve café, 日本語, emoji 🙂 and symbols ∑≠∞",
    " ".join(f"paragraph {i} about GPU leases, embeddings and fair queues." for i in range(60)),
]


def _cosines(a: list[list[float]], b: np.ndarray) -> np.ndarray:
    left = np.array(a)
    left /= np.linalg.norm(left, axis=1, keepdims=True)
    right = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosines: np.ndarray = np.sum(left * right, axis=1)
    return cosines


async def test_default_openai_embeddings_get_the_vectors_of_their_texts(
    minilm_live: Live, minilm: SentenceTransformerEmbedder, offline_tiktoken: Path
) -> None:
    embeddings = OpenAIEmbeddings(
        model=minilm.name,
        base_url=f"{minilm_live.url}/v1",
        api_key=SecretStr("unused"),
        max_retries=0,
    )
    assert embeddings.check_embedding_ctx_length  # the defaults: tiktoken token arrays
    assert embeddings.tiktoken_enabled
    by_langchain = await embeddings.aembed_documents(TEXTS)
    query = await embeddings.aembed_query(TEXTS[0])
    truth = await minilm.embed(TEXTS)
    assert _cosines(by_langchain, truth).min() >= 0.999
    assert _cosines([query], truth[:1]).min() >= 0.999
