"""One policy schedules every embedding request by its size; the gateway reports the time a
request spent loading a model (Ollama's ``load_duration``)."""

from __future__ import annotations

import pytest

from gpuguard import ConfigError, Priority
from gpuguard.embed._tokens import TokenMeaning
from gpuguard.gateway import EmbeddingSizes, EmbedSize, ModelGateway
from gpuguard.llm import ChatMessage
from gpuguard.server._runtime import build_gateway
from gpuguard.settings import load_settings
from gpuguard.testing import FakeBackend, HashEmbedder

SIZES = EmbeddingSizes(
    query_max_texts=2, query_max_chars=10, bulk_above_texts=4, bulk_above_chars=40
)


@pytest.mark.parametrize(
    ("texts", "size"),
    [
        (["a"], EmbedSize.QUERY),
        (["a" * 5, "b" * 5], EmbedSize.QUERY),
        (["a" * 11], EmbedSize.MEDIUM),  # one text, but long
        (["a", "b", "c"], EmbedSize.MEDIUM),
        (["a"] * 4, EmbedSize.MEDIUM),
        (["a"] * 5, EmbedSize.BULK),  # many texts, however short
        (["a" * 41], EmbedSize.BULK),  # one text, but very long
    ],
)
def test_requests_are_classified_by_count_and_characters(texts: list[str], size: EmbedSize) -> None:
    assert SIZES.classify(texts) is size


def test_each_size_has_its_lease_priority() -> None:
    assert EmbedSize.QUERY.priority is Priority.INTERACTIVE
    assert EmbedSize.MEDIUM.priority is Priority.NORMAL
    assert EmbedSize.BULK.priority is Priority.BACKGROUND


@pytest.mark.parametrize(
    "thresholds",
    [
        {"query_max_texts": 0},
        {"query_max_texts": 10, "bulk_above_texts": 9},
        {"query_max_chars": 500_000},
    ],
)
def test_impossible_thresholds_are_refused(thresholds: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        EmbeddingSizes(**thresholds)


def test_thresholds_are_settings_with_strict_keys() -> None:
    settings = load_settings(
        llm={"backend": "fake"},
        embeddings={
            "gpu_engine": "hash",
            "cpu_engine": "hash",
            "query_max_texts": 3,
            "bulk_above_texts": 100,
            "batch_size": 7,
        },
    )
    gateway = build_gateway(settings)
    assert gateway.embedding_sizes == EmbeddingSizes(query_max_texts=3, bulk_above_texts=100)
    assert gateway.bulk is not None
    assert gateway.bulk.batch_size == 7
    with pytest.raises(ConfigError, match="query_max_texts must be <= bulk_above_texts"):
        load_settings(embeddings={"query_max_texts": 300})
    with pytest.raises(ConfigError, match=r"embeddings\.bulk_above_text: unknown setting"):
        load_settings(embeddings={"bulk_above_text": 3})


def _gateway(token_arrays: TokenMeaning = "openai") -> ModelGateway:
    return ModelGateway(
        FakeBackend(["m"]),
        model="m",
        gpu_embedder=HashEmbedder(name="e", device="cuda"),
        cpu_embedder=HashEmbedder(name="e"),
        embedding_sizes=SIZES,
        bulk_batch_size=2,
        token_arrays=token_arrays,
    )


async def test_embed_request_reports_the_load_it_waited_for() -> None:
    gateway = _gateway()
    first = await gateway.embed_request(["a"])
    assert first.size is EmbedSize.QUERY
    assert first.load_ns > 0  # the GPU model loaded for it
    second = await gateway.embed_request(["a"])
    assert second.load_ns == 0
    assert second.vectors.tolist() == first.vectors.tolist()
    bulk = await gateway.embed_request(["a", "b", "c", "d", "e"])
    assert bulk.size is EmbedSize.BULK
    assert bulk.vectors.shape == (5, 384)
    assert bulk.load_ns == 0
    await gateway.aclose()


async def test_a_bulk_request_on_a_fresh_gateway_waits_only_for_the_cpu_model() -> None:
    gateway = _gateway()
    answer = await gateway.embed_request(["x"] * 5)
    assert answer.load_ns > 0  # the CPU model loaded for it
    assert gateway.cpu_embedder is not None
    assert gateway.cpu_embedder.loaded
    await gateway.aclose()


async def test_load_and_chat_report_how_long_a_load_took() -> None:
    gateway = _gateway()
    loads: list[int] = []
    assert await gateway.complete([ChatMessage("user", "hi")]) == "echo: hi"
    await gateway.unload("m")
    async for _ in gateway.chat([ChatMessage("user", "hi")], on_load=loads.append):
        pass
    async for _ in gateway.chat([ChatMessage("user", "hi")], on_load=loads.append):
        pass
    assert len(loads) == 1  # only the chat that found the model unloaded
    assert loads[0] > 0
    assert await gateway.load("m") > 0
    await gateway.aclose()


async def test_token_arrays_are_cl100k_ids_unless_the_model_is_said_to_own_them() -> None:
    gateway = _gateway()
    assert await gateway.decode_tokens([[15339, 1917], [9906]]) == ["hello world", "Hello"]
    await gateway.aclose()
    gateway = _gateway(token_arrays="model")
    assert await gateway.decode_tokens([[1, 2], [3]]) == ["tok1 tok2", "tok3"]
    await gateway.aclose()


def test_an_unknown_token_meaning_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="token_arrays"):
        _gateway(token_arrays="vllm")  # type: ignore[arg-type]
