"""create_backend, the tiny GGUF writer, and the package's public surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gpuguard.llm
from gpuguard import ConfigError
from gpuguard.llm import (
    BACKEND_KINDS,
    FoundryLocalBackend,
    LlamaCppBackend,
    LlamaServerBackend,
    LlmBackend,
    LmStudioBackend,
    OllamaBackend,
    OpenAICompatBackend,
    VllmBackend,
    create_backend,
    write_tiny_gguf,
)


def test_public_names_are_exactly_these() -> None:
    assert sorted(gpuguard.llm.__all__) == [
        "BACKEND_KINDS",
        "BackendHealth",
        "ChatChunk",
        "ChatMessage",
        "ChatOptions",
        "FoundryLocalBackend",
        "LlamaCppBackend",
        "LlamaCppModels",
        "LlamaServerBackend",
        "LlmBackend",
        "LmStudioBackend",
        "LoadedModel",
        "OllamaBackend",
        "OpenAICompatBackend",
        "Timeouts",
        "VllmBackend",
        "complete_usage",
        "create_backend",
        "discover_foundry_endpoint",
        "reject_unsupported",
        "write_tiny_gguf",
    ]


@pytest.mark.parametrize(
    ("kind", "cls", "url"),
    [
        ("foundry", FoundryLocalBackend, None),
        ("ollama", OllamaBackend, "http://127.0.0.1:11434"),
        ("llama-server", LlamaServerBackend, "http://127.0.0.1:8080"),
        ("vllm", VllmBackend, "http://127.0.0.1:8000"),
        ("lmstudio", LmStudioBackend, "http://127.0.0.1:1234"),
    ],
)
async def test_server_kinds_and_their_default_urls(
    kind: str, cls: type[LlmBackend], url: str | None
) -> None:
    backend = create_backend(kind)
    assert type(backend) is cls
    assert backend.kind == kind
    assert isinstance(backend, LlmBackend)
    assert getattr(backend, "base_url") == url  # noqa: B009 - not part of the protocol
    await backend.aclose()


async def test_a_given_url_wins() -> None:
    backend = create_backend("openai", base_url="http://gpu-box:9000/v1/", api_key="k")
    assert type(backend) is OpenAICompatBackend
    assert backend.base_url == "http://gpu-box:9000"
    await backend.aclose()


async def test_llama_cpp_kind(tmp_path: Path) -> None:
    backend = create_backend("llama-cpp", model_path=str(tmp_path / "m.gguf"), n_gpu_layers=0)
    assert type(backend) is LlamaCppBackend
    assert await backend.list_models() == ["m"]
    named = create_backend("llama-cpp", model_path=str(tmp_path / "m.gguf"), model_name="mine")
    assert await named.list_models() == ["mine"]


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("nope", {}, "unknown LLM backend kind 'nope'"),
        ("openai", {}, "needs base_url"),
        ("llama-cpp", {}, "needs model_path"),
        ("ollama", {"base_url": "localhost:11434"}, "http"),
    ],
)
def test_config_errors(kind: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_backend(kind, **options)  # type: ignore[arg-type]


def test_every_kind_is_listed() -> None:
    assert set(BACKEND_KINDS) == {
        "foundry",
        "ollama",
        "llama-server",
        "vllm",
        "lmstudio",
        "openai",
        "llama-cpp",
    }


def test_tiny_gguf_has_a_tokenizer_with_merges_and_a_chat_template(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    reader = gguf.GGUFReader(path)

    def field(name: str) -> object:
        return reader.fields[name].contents()

    assert field("general.architecture") == "llama"
    assert field("tokenizer.ggml.model") == "gpt2"
    assert "Ġt" in field("tokenizer.ggml.tokens")  # type: ignore[operator]
    assert len(field("tokenizer.ggml.merges")) >= 1  # type: ignore[arg-type]
    assert "add_generation_prompt" in field("tokenizer.chat_template")  # type: ignore[operator]
    assert path.stat().st_size < 1_000_000


def test_importing_the_package_needs_no_third_party_module() -> None:
    code = (
        "import sys, gpuguard.llm; "
        "print(sorted(m for m in ('httpx', 'numpy', 'gguf', 'llama_cpp') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
