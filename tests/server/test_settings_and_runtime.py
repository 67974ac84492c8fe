"""Settings from a file and the environment, and an app built from settings alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from gpuguard import ConfigError
from gpuguard._settings import load_settings
from gpuguard.server import create_app, running_server


def test_file_then_environment_then_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gpuguard.toml"
    config.write_text('[llm]\nbackend = "ollama"\nmodel = "m1"\n[server]\nport = 9000\n')
    monkeypatch.setenv("GPUGUARD_CONFIG", str(config))
    monkeypatch.setenv("GPUGUARD_SERVER__PORT", "9100")
    monkeypatch.setenv("GPUGUARD_EMBEDDINGS__GPU_ENGINE", "none")
    settings = load_settings(guard={"max_waiters": 3})
    assert (settings.llm.backend, settings.model_name) == ("ollama", "m1")
    assert settings.server.port == 9100
    assert settings.embeddings.gpu_engine is None
    assert settings.guard.max_waiters == 3
    assert settings.store_path == Path(".gpuguard/index.db")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"llm": {"backend": "ollama"}}, "llm.model is required"),
        ({"llm": {"backend": "nope"}}, "llm.backend"),
        ({"guard": {"max_waiters": -1}}, "guard.max_waiters"),
        ({"server": {"port": 70000}}, "server.port"),
    ],
)
def test_invalid_settings_are_one_clear_config_error(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


async def test_app_built_from_settings_chats_with_embedded_llama_cpp(tmp_path: Path) -> None:
    """The real in-process llama.cpp on the generated tiny model, behind the whole stack."""
    settings = load_settings(
        data_dir=tmp_path,
        llm={"backend": "llama-cpp"},
        embeddings={"gpu_engine": "hash", "cpu_engine": "hash"},
    )
    app = create_app(settings)
    async with (
        running_server(app) as url,
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        models = await client.models.list()
        assert [m.id for m in models.data] == ["tiny-random"]
        stream = await client.chat.completions.create(
            model="tiny-random",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].choices[0].finish_reason in ("length", "stop")
        gpu = app.state.context.gateway.guard
        assert gpu.current is None
    assert (tmp_path / "models" / "tiny-random.gguf").is_file()
