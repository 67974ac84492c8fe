"""The GGUF footprint: weights + KV cache + one batch, read from the header of a real file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuguard import ConfigError
from gpuguard.devices import predict_gguf_footprint
from gpuguard.llm.tiny_model import TINY_CONTEXT, write_tiny_gguf

# The tiny model's shape, as tiny_model writes it: one layer, 2 heads (2 for keys and
# values), embedding 32, feed-forward 64, 263 tokens, every tensor float32.
LAYERS, HEADS, EMBEDDING, FEED_FORWARD, VOCAB = 1, 2, 32, 64, 263
WEIGHTS = 4 * (
    2 * VOCAB * EMBEDDING  # token embedding and output
    + 4 * EMBEDDING * EMBEDDING  # q, k, v, output
    + 3 * FEED_FORWARD * EMBEDDING  # gate, up, down
    + 3 * EMBEDDING  # three norms
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_the_prediction_follows_the_formula_at_the_trained_context(tiny: Path) -> None:
    footprint = predict_gguf_footprint(tiny)
    head_dim = EMBEDDING // HEADS
    assert (footprint.layers, footprint.kv_heads, footprint.head_dim) == (LAYERS, HEADS, head_dim)
    assert footprint.context_tokens == TINY_CONTEXT
    assert footprint.weights_bytes == WEIGHTS
    assert footprint.kv_cache_bytes == 2 * LAYERS * HEADS * head_dim * TINY_CONTEXT * 2
    assert footprint.batch_bytes == 512 * (EMBEDDING + VOCAB) * 4
    assert footprint.total_bytes == WEIGHTS + footprint.kv_cache_bytes + footprint.batch_bytes


def test_a_shorter_context_and_batch_shrink_the_cache_and_the_surcharge(tiny: Path) -> None:
    full = predict_gguf_footprint(tiny)
    short = predict_gguf_footprint(tiny, context_tokens=1024, batch_tokens=128)
    assert short.weights_bytes == full.weights_bytes
    assert short.kv_cache_bytes * 4 == full.kv_cache_bytes
    assert short.batch_bytes * 4 == full.batch_bytes


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ConfigError, match=r"model\.gguf is not a readable GGUF model"):
        predict_gguf_footprint(bogus)
    with pytest.raises(ConfigError, match=r"missing\.gguf"):
        predict_gguf_footprint(tmp_path / "missing.gguf")


def test_impossible_sizes_are_refused_at_once(tiny: Path) -> None:
    with pytest.raises(ValueError, match="context_tokens"):
        predict_gguf_footprint(tiny, context_tokens=0)
    with pytest.raises(ValueError, match="batch_tokens"):
        predict_gguf_footprint(tiny, batch_tokens=0)
