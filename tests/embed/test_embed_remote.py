"""RemoteEmbedder against protocol doubles of the two documented APIs.

OpenAI ``POST /v1/embeddings``: ``{"model", "input": [...]}`` ->
``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
"usage"}``. Ollama ``POST /api/embed``: ``{"model", "input": [...]}`` ->
``{"model", "embeddings": [[...]], "total_duration", "load_duration", "prompt_eval_count"}``;
an unknown model is HTTP 404 ``{"error": "model ... not found"}``.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from gpuguard import EmbedderUnavailable, EmbeddingError
from gpuguard.embed import RemoteEmbedder
from gpuguard.embed.remote import RemoteApi

MODEL = "nomic-embed-text"


def _raw_vector(text: str) -> list[float]:
    """Deliberately not normalised: the embedder must normalise."""
    return [float(len(text)), 3.0, float(text.count(" ")), 1.0]


class EmbeddingServerDouble:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, object]]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append((request.url.path, body))
        if body["model"] != MODEL:
            return httpx.Response(404, json={"error": f"model {body['model']!r} not found"})
        texts = body["input"]
        if request.url.path == "/v1/embeddings":
            data = [
                {"object": "embedding", "index": i, "embedding": _raw_vector(t)}
                for i, t in enumerate(texts)
            ]
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": data[::-1],  # the API identifies rows by index, not position
                    "model": MODEL,
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                },
            )
        if request.url.path == "/api/embed":
            return httpx.Response(
                200,
                json={
                    "model": MODEL,
                    "embeddings": [_raw_vector(t) for t in texts],
                    "total_duration": 1,
                    "load_duration": 1,
                    "prompt_eval_count": 1,
                },
            )
        return httpx.Response(404, text="404 page not found")


@pytest.fixture
def server() -> EmbeddingServerDouble:
    return EmbeddingServerDouble()


@pytest.mark.parametrize(
    ("url", "api", "path"),
    [
        ("http://llm.local:8080", "openai", "/v1/embeddings"),
        ("http://llm.local:8080/v1/", "openai", "/v1/embeddings"),
        ("http://llm.local:11434", "ollama", "/api/embed"),
    ],
)
async def test_embeds_in_order_and_normalises(
    server: EmbeddingServerDouble, url: str, api: RemoteApi, path: str
) -> None:
    embedder = RemoteEmbedder(
        url, model=MODEL, api=api, transport=httpx.MockTransport(server.handle)
    )
    texts = ["one", "two words", "three words here"]

    assert await embedder.load() == 4
    vectors = await embedder.embed(texts)

    expected = np.array([_raw_vector(t) for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    assert server.requests[-1] == (path, {"model": MODEL, "input": texts})


async def test_unknown_model_is_unavailable(server: EmbeddingServerDouble) -> None:
    embedder = RemoteEmbedder(
        "http://x", model="nope", api="ollama", transport=httpx.MockTransport(server.handle)
    )
    with pytest.raises(EmbedderUnavailable, match="does not serve model 'nope'"):
        await embedder.embed(["a"])


async def test_unreachable_server_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    embedder = RemoteEmbedder("http://x", model=MODEL, transport=httpx.MockTransport(refuse))
    with pytest.raises(EmbedderUnavailable, match="unreachable"):
        await embedder.load()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500, text="boom"), "HTTP 500"),
        (httpx.Response(200, json={"unexpected": True}), "outside the openai embeddings API"),
        (httpx.Response(200, json={"data": []}), "shape"),
    ],
)
async def test_server_failures_are_embedding_errors(response: httpx.Response, message: str) -> None:
    embedder = RemoteEmbedder(
        "http://x", model=MODEL, transport=httpx.MockTransport(lambda request: response)
    )
    with pytest.raises(EmbeddingError, match=message):
        await embedder.embed(["a"])


async def test_a_change_of_dimension_is_refused(server: EmbeddingServerDouble) -> None:
    embedder = RemoteEmbedder(
        "http://x", model=MODEL, dimension=8, transport=httpx.MockTransport(server.handle)
    )
    with pytest.raises(EmbeddingError, match="returned 4-dimensional vectors, expected 8"):
        await embedder.embed(["a"])
