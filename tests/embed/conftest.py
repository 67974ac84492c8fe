from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuguard.embed import SentenceTransformerEmbedder, export_onnx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_cpu() -> SentenceTransformerEmbedder:
    """One real all-MiniLM-L6-v2 for the whole session (loaded on first use)."""
    return SentenceTransformerEmbedder(device="cpu")


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model exported to ONNX once per session."""
    return export_onnx(None, tmp_path_factory.mktemp("minilm-onnx"))
