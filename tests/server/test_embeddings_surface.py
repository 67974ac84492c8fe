"""``/v1/embeddings`` as OpenAI documents it: long strings, ``dimensions``, base64, and
clear 400s for what it cannot do."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from .conftest import EMBEDDER, Live


async def test_one_string_longer_than_2048_characters_is_one_input(live: Live) -> None:
    reply = await live.client.embeddings.create(model=EMBEDDER, input="word " * 1000)
    assert len(reply.data) == 1


async def test_dimensions_truncate_and_renormalise(live: Live) -> None:
    text = " ".join(f"word{i}" for i in range(200))
    full = await live.client.embeddings.create(model=EMBEDDER, input=text, encoding_format="float")
    short = await live.client.embeddings.create(
        model=EMBEDDER, input=text, dimensions=128, encoding_format="float"
    )
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (128,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    head = np.array(full.data[0].embedding[:128])
    np.testing.assert_allclose(vector, head / np.linalg.norm(head), atol=1e-6)


async def test_more_dimensions_than_the_model_has_is_a_400(live: Live) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await live.client.embeddings.create(model=EMBEDDER, input="a", dimensions=4096)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "dimensions"


async def test_base64_is_little_endian_float32(live: Live) -> None:
    response = await live.http.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": "a b", "encoding_format": "base64"}
    )
    encoded = response.json()["data"][0]["embedding"]
    values = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert values.shape == (384,)


@pytest.mark.parametrize(
    ("given", "param"),
    [([], "input"), ([[1, 2, 3]], "input"), ([1, 2, 3], "input")],
)
async def test_inputs_it_cannot_embed_are_400_naming_input(
    live: Live, given: object, param: str
) -> None:
    response = await live.http.post("/v1/embeddings", json={"model": EMBEDDER, "input": given})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
