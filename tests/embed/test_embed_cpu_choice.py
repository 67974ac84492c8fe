"""The CPU engine ``auto``: fastembed over an ONNX export where there is one, else torch."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gpuguard.embed import (
    FastEmbedEmbedder,
    SentenceTransformerEmbedder,
    choose_cpu_engine,
    create_embedder,
)
from gpuguard.server._runtime import build_gateway
from gpuguard.settings import load_settings


def test_an_onnx_export_runs_on_fastembed(onnx_dir: Path, tmp_path: Path) -> None:
    choice = choose_cpu_engine("all-MiniLM-L6-v2", onnx_dirs=[tmp_path / "absent", onnx_dir])

    assert (choice.engine, choice.model) == ("fastembed", str(onnx_dir))
    assert str(onnx_dir) in choice.reason
    assert isinstance(create_embedder(choice.engine, model=choice.model), FastEmbedEmbedder)
    assert choose_cpu_engine(str(onnx_dir)).engine == "fastembed"  # the model is the export


def test_without_an_export_sentence_transformers_runs(tmp_path: Path) -> None:
    choice = choose_cpu_engine("all-MiniLM-L6-v2", onnx_dirs=[tmp_path])

    assert (choice.engine, choice.model) == ("sentence-transformers", "all-MiniLM-L6-v2")
    assert choice.reason == f"no ONNX export found ({tmp_path})"


def test_without_onnx_runtime_sentence_transformers_runs(
    onnx_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)

    choice = choose_cpu_engine(None, onnx_dirs=[onnx_dir])

    assert (choice.engine, choice.model) == ("sentence-transformers", None)
    assert choice.reason == "fastembed and onnxruntime not installed"


def test_the_server_prefers_an_export_in_its_data_dir_and_says_so(
    onnx_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "all-MiniLM-L6-v2").symlink_to(onnx_dir, target_is_directory=True)
    with caplog.at_level(logging.INFO, logger="gpuguard.server"):
        gateway = build_gateway(
            load_settings(
                data_dir=tmp_path, llm={"backend": "fake"}, embeddings={"gpu_engine": "none"}
            )
        )
    assert isinstance(gateway.cpu_embedder, FastEmbedEmbedder)
    assert any("CPU embeddings run on fastembed" in message for message in caplog.messages)

    plain = build_gateway(
        load_settings(
            data_dir=tmp_path / "empty", llm={"backend": "fake"}, embeddings={"gpu_engine": "none"}
        )
    )
    assert isinstance(plain.cpu_embedder, SentenceTransformerEmbedder)
