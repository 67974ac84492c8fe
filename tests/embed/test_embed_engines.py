from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch

import gpuguard.embed
from gpuguard import ConfigError, EmbedderUnavailable
from gpuguard.embed import (
    DEFAULT_MODEL,
    FastEmbedEmbedder,
    RemoteEmbedder,
    SentenceTransformerEmbedder,
    create_embedder,
)
from gpuguard.testing import HashEmbedder

TEXTS = ["The cat sat on the mat.", "A kitten rests on a rug.", "Quarterly tax filing deadline."]


def test_public_names_are_exactly_these() -> None:
    assert sorted(gpuguard.embed.__all__) == sorted(
        [
            "DEFAULT_MODEL",
            "ENGINES",
            "FALLBACK_MESSAGE",
            "BulkEmbedder",
            "BulkRun",
            "BulkStats",
            "EmbeddedBatch",
            "Embedder",
            "EmbedderPair",
            "EngineChoice",
            "FastEmbedEmbedder",
            "HashEmbedder",
            "LeaseGuard",
            "ProcessEmbedder",
            "RemoteEmbedder",
            "SentenceTransformerEmbedder",
            "SharedModelEmbedder",
            "Vectors",
            "bundled_model_path",
            "choose_cpu_engine",
            "create_embedder",
            "create_embedder_pair",
            "export_onnx",
            "report_fallback",
        ]
    )


async def test_sentence_transformers_embeds_normalised_vectors_in_order(
    minilm_cpu: SentenceTransformerEmbedder,
) -> None:
    vectors = await minilm_cpu.embed(TEXTS)

    assert minilm_cpu.name == DEFAULT_MODEL
    assert minilm_cpu.device == "cpu"
    assert minilm_cpu.dimension == 384
    assert minilm_cpu.loaded
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # cats are closer than taxes
    single = await minilm_cpu.embed([TEXTS[2]])
    np.testing.assert_allclose(single[0], vectors[2], atol=1e-5)


async def test_fastembed_on_the_onnx_export_matches_sentence_transformers(
    onnx_dir: Path, minilm_cpu: SentenceTransformerEmbedder
) -> None:
    embedder = FastEmbedEmbedder(model_path=onnx_dir, device="cpu")

    vectors = await embedder.embed(TEXTS)

    assert embedder.name == DEFAULT_MODEL
    assert embedder.dimension == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    reference = await minilm_cpu.embed(TEXTS)
    assert np.all(np.sum(vectors * reference, axis=1) > 0.999)
    await embedder.aclose()
    assert not embedder.loaded


def test_fastembed_refuses_a_directory_that_is_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match="export_onnx"):
        FastEmbedEmbedder(model_path=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_sentence_transformers_refuses_a_device_this_machine_lacks(device: str) -> None:
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(EmbedderUnavailable, match=f"{device!r} is not available"):
        SentenceTransformerEmbedder(device=device)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="this onnxruntime has CUDA",
)
def test_fastembed_refuses_a_provider_this_machine_lacks(onnx_dir: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match="CUDAExecutionProvider"):
        FastEmbedEmbedder(model_path=onnx_dir, device="cuda")


def test_unknown_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown device"):
        SentenceTransformerEmbedder(device="tpu")


def test_create_embedder_builds_each_engine(onnx_dir: Path) -> None:
    assert isinstance(create_embedder("sentence-transformers"), SentenceTransformerEmbedder)
    assert isinstance(create_embedder("fastembed", model=str(onnx_dir)), FastEmbedEmbedder)
    remote = create_embedder("remote", model="m", url="http://127.0.0.1:11434", api="ollama")
    assert isinstance(remote, RemoteEmbedder)
    assert remote.device == "remote"
    fake = create_embedder("hash", device="cuda")
    assert isinstance(fake, HashEmbedder)
    assert fake.device == "cuda"


@pytest.mark.parametrize(
    ("engine", "options", "message"),
    [
        ("word2vec", {}, "unknown embedding engine"),
        ("remote", {"model": "m"}, "needs url= and model="),
        ("remote", {"model": "m", "url": "http://x", "api": "grpc"}, "unknown remote"),
        ("fastembed", {}, "needs model="),
    ],
)
def test_create_embedder_refuses_bad_settings(
    engine: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_embedder(engine, **options)
