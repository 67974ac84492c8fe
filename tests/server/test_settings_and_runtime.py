"""Settings from a file and the environment, and an app built from settings alone."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import openai
import pytest

from gpuguard import ConfigError
from gpuguard.gateway import ModelGateway
from gpuguard.server import create_app, running_server
from gpuguard.settings import EmbeddingSettings, LlmSettings, Settings, load_settings


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
        chat_models = [
            m.id
            for m in models.data
            if "chat" in (m.model_extra or {}).get("gpuguard", {}).get("capabilities", [])
        ]
        assert chat_models == ["tiny-random"]
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


async def test_start_up_does_not_block_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building the runtime imports torch, may write the tiny model and opens SQLite: while it
    # does, the event loop must keep serving (a status request, a page, a health probe).
    from gpuguard.server import _runtime

    building = threading.Event()
    loop_was_free = threading.Event()
    answered: list[bool] = []
    real_build = _runtime.build_gateway

    def slow_build(settings: Settings) -> ModelGateway:
        building.set()
        # The loop answers the test's probe only if this build runs off the loop thread.
        answered.append(loop_was_free.wait(timeout=10))
        return real_build(settings)

    monkeypatch.setattr(_runtime, "build_gateway", slow_build)
    settings = Settings(
        llm=LlmSettings(backend="fake"),
        embeddings=EmbeddingSettings(gpu_engine=None, cpu_engine="hash"),
        data_dir=tmp_path,
    )

    async def start() -> None:
        async with _runtime.open_runtime(settings, start=False):
            pass

    task = asyncio.create_task(start())
    assert await asyncio.to_thread(building.wait, 10)
    probe = asyncio.Event()
    asyncio.get_running_loop().call_soon(probe.set)
    await probe.wait()
    loop_was_free.set()
    await task
    assert answered == [True], "the event loop was blocked while the runtime was built"
