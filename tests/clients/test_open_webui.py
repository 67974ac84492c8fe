"""The requests Open WebUI sends, replayed byte for byte over real llama.cpp.

Open WebUI is too large to run here, so these are the bodies its backend builds
(``backend/open_webui/utils/payload.py``: ``apply_model_params_to_body_ollama`` and
``apply_model_params_to_body_openai``; ``routers/ollama.py``: a model name without a tag gets
``:latest``, the model list is ``/api/tags`` merged with ``/api/ps``, whose ``expires_at`` it
reads with ``datetime.fromisoformat``). A user's "Top K", "Repeat Penalty" or "Mirostat"
setting becomes an Ollama option, or a top-level field on an OpenAI connection.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from .conftest import TINY, LlamaLive

# Open WebUI's Advanced Params, as each lands in Ollama's ``options`` (cast as it casts them).
TOP_K = {"top_k": 40}
REPEAT_PENALTY = {"repeat_penalty": 1.1}
MIROSTAT = {"mirostat": 1, "mirostat_eta": 0.1, "mirostat_tau": 5.0}
EVERY_SAMPLER = {
    "temperature": 0.8,
    "top_p": 0.9,
    "seed": 42,
    **MIROSTAT,
    "num_ctx": 2048,
    "num_batch": 512,
    "num_predict": 8,
    "repeat_last_n": 64,
    **TOP_K,
    "min_p": 0.05,
    "typical_p": 1.0,
    **REPEAT_PENALTY,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "stop": ["<|im_end|>"],
    "use_mmap": True,
    "use_mlock": False,
    "num_thread": 2,
}
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Why is the sky blue?"},
]


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


@pytest.mark.parametrize(
    "options",
    [TOP_K, REPEAT_PENALTY, MIROSTAT, EVERY_SAMPLER],
    ids=["top-k", "repeat-penalty", "mirostat", "every-sampler"],
)
async def test_a_chat_with_advanced_params_streams_an_answer(
    llama_live: LlamaLive, options: dict[str, Any]
) -> None:
    body = {
        "model": f"{TINY}:latest",
        "messages": MESSAGES,
        "stream": True,
        "options": {"num_predict": 8, **options},
    }
    response = await llama_live.http.post(
        "/api/chat",
        content=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = _lines(response.text)
    assert lines[-1]["done"] is True
    assert "error" not in lines[-1]
    assert "".join(line["message"]["content"] for line in lines if not line["done"])


async def test_the_same_params_on_an_openai_connection(llama_live: LlamaLive) -> None:
    body = {
        "model": TINY,
        "messages": MESSAGES,
        "stream": True,
        "temperature": 0.8,
        "max_tokens": 8,
        "min_p": 0.05,
        "top_k": 40,
        "repeat_penalty": 1.1,
        "mirostat": 2,
        "mirostat_tau": 5.0,
        "mirostat_eta": 0.1,
    }
    response = await llama_live.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.text.rstrip().endswith("data: [DONE]")
    assert '"error"' not in response.text


async def test_the_model_list_it_builds_reads_tags_and_ps(llama_live: LlamaLive) -> None:
    await llama_live.http.post("/api/chat", json={"model": f"{TINY}:latest", "messages": []})
    tags = (await llama_live.http.get("/api/tags")).json()["models"]
    ps = (await llama_live.http.get("/api/ps")).json()["models"]
    version = (await llama_live.http.get("/api/version")).json()
    assert version["version"]
    assert all(model["model"] for model in tags)
    expires = {m["model"]: int(dt.datetime.fromisoformat(m["expires_at"]).timestamp()) for m in ps}
    assert f"{TINY}" in {name.removesuffix(":latest") for name in expires}


async def test_its_ollama_embedding_request_for_rag(llama_live: LlamaLive) -> None:
    # Open WebUI's RAG with the Ollama engine and the model set to "all-minilm".
    texts = ["Why is the sky blue?", "Rayleigh scattering."]
    response = await llama_live.http.post(
        "/api/embed", json={"input": texts, "model": "all-minilm"}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["embeddings"]) == 2
    assert len(response.json()["embeddings"][0]) == 384
