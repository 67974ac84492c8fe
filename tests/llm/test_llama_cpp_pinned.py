"""``[models."NAME"] gpu``: the embedded llama.cpp loads a pinned model on that GPU alone."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gpuguard import ConfigError, GpuEvent
from gpuguard.llm._factory import create_backend
from gpuguard.llm._llama_host import LlamaHost
from gpuguard.llm.llama_cpp_models import LlamaCppModels
from gpuguard.server._runtime import build_gateway, model_gpus
from gpuguard.settings import load_settings


def test_a_pinned_host_loads_with_main_gpu_and_no_split(
    llama_cpp: ModuleType, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    class Recorded:
        last_n_tokens_size = 64

        def __init__(self, **arguments: Any) -> None:
            seen.append(arguments)

    monkeypatch.setattr(llama_cpp, "Llama", Recorded)
    LlamaHost(str(tiny_gguf), -1, 128, False, main_gpu=1)
    LlamaHost(str(tiny_gguf), -1, 128, False)
    assert (seen[0]["main_gpu"], seen[0]["split_mode"]) == (1, llama_cpp.LLAMA_SPLIT_MODE_NONE)
    assert "main_gpu" not in seen[1]
    assert "split_mode" not in seen[1]


def test_the_factory_pins_the_models_it_is_told_to(tiny_gguf: Path) -> None:
    backend = create_backend(
        "llama-cpp",
        model_path=str(tiny_gguf),
        model_name="main",
        more_models={"other": (str(tiny_gguf), 128, -1)},
        main_gpus={"other": 1},
    )
    assert isinstance(backend, LlamaCppModels)
    engines = backend._models
    assert engines["other"].worker._args[-1] == 1
    assert engines["main"].worker._args[-1] is None


def test_a_model_pinned_to_a_gpu_the_server_does_not_lease_fails_at_start_up(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        llm={"backend": "fake"},
        guard={"scope": "process", "gpus": [0]},
        models={"m": {"gpu": 1}},
        embeddings={"gpu_engine": "none", "cpu_engine": "hash"},
    )
    with pytest.raises(ConfigError, match=r'\[models."m"\] gpu = 1: this server leases GPU\(s\) 0'):
        build_gateway(settings)


async def test_a_cuda_embedder_gets_one_copy_per_gpu_and_models_their_pins(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        llm={"backend": "fake"},
        guard={"scope": "process", "gpus": [0, 1]},
        models={"m": {"gpu": 1}, "n": {}},
        embeddings={"gpu_engine": "hash", "gpu_device": "cuda", "cpu_engine": "hash"},
    )
    gateway = build_gateway(settings)
    assert [guard.name for guard in gateway.gpus] == ["gpu0", "gpu1"]
    assert gateway.gpu_embedder is not None
    assert gateway.gpu_embedder.device == "cuda:0"
    assert gateway._embeddings._pairs[1].gpu.device == "cuda:1"  # type: ignore[union-attr]
    await gateway.load("m")
    loads = [e.guard for e in gateway.events.history(kinds={"gpu"}) if isinstance(e, GpuEvent)]
    assert set(loads) == {"gpu1"}
    await gateway.aclose()
    await gateway.gpus.aclose()


def test_with_several_gpus_the_embedded_llama_cpp_pins_every_model(tiny_gguf: Path) -> None:
    settings = load_settings(
        llm={"backend": "llama-cpp", "model": "a"},
        guard={"gpus": [0, 1]},
        models={"a": {"path": str(tiny_gguf)}, "b": {"path": str(tiny_gguf), "gpu": 1}},
    )
    assert model_gpus(settings, (0, 1)) == {"a": 0, "b": 1}
    with pytest.raises(ConfigError, match=r'\[models."b"\] gpu = 1'):
        model_gpus(settings, (0,))


def test_one_gpu_pins_only_what_is_configured(tiny_gguf: Path) -> None:
    settings = load_settings(
        llm={"backend": "llama-cpp", "model": "a"}, models={"a": {"path": str(tiny_gguf)}}
    )
    assert model_gpus(settings, (0,)) == {}
