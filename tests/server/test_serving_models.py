"""Every configured model is served: a second GGUF in ``[models]`` loads on demand under the
lease, and past ``max_loaded_models`` the least recently used one is unloaded first."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gpuguard import ConfigError, GpuGuard
from gpuguard.gateway import ModelGateway
from gpuguard.llm import ChatMessage, write_tiny_gguf
from gpuguard.server import create_app, running_server
from gpuguard.settings import load_settings
from gpuguard.testing import FakeBackend, HashEmbedder

HI = [ChatMessage("user", "hi")]


async def _chat(gateway: ModelGateway, model: str) -> None:
    async for _ in gateway.chat(HI, model=model):
        pass


async def test_past_the_bound_the_least_recently_used_model_is_unloaded_first() -> None:
    backend = FakeBackend(["a", "b", "c"])
    gateway = ModelGateway(
        backend, model="a", cpu_embedder=HashEmbedder(), max_loaded_models=2, guard=GpuGuard()
    )
    await _chat(gateway, "a")
    await _chat(gateway, "b")
    await _chat(gateway, "a")  # "b" is now the least recently used
    await _chat(gateway, "c")
    assert backend.loaded == {"a", "c"}
    assert backend.calls[-3:] == [("unload", "b"), ("load", "c"), ("chat", "c")]
    await gateway.prewarm("b")  # a prewarm of another model never unloads one: skipped
    assert backend.loaded == {"a", "c"}
    await gateway.aclose()
    with pytest.raises(ConfigError, match="max_loaded_models"):
        ModelGateway(backend, cpu_embedder=HashEmbedder(), max_loaded_models=0)


async def test_a_second_gguf_model_is_served_and_swapped_in(tmp_path: Path) -> None:
    chat_gguf = write_tiny_gguf(tmp_path / "chat.gguf")
    coder_gguf = write_tiny_gguf(tmp_path / "coder.gguf")
    config = tmp_path / "gpuguard.toml"
    config.write_text(
        f"""
data_dir = "{tmp_path / "data"}"
[llm]
backend = "llama-cpp"
model = "chat"
n_gpu_layers = 0
[embeddings]
gpu_engine = "none"
cpu_engine = "hash"
[guard]
scope = "process"
[models."chat"]
path = "{chat_gguf}"
context_size = 512
[models."coder"]
path = "{coder_gguf}"
context_size = 512
prewarm = true
"""
    )
    app = create_app(load_settings(config))
    hello = [{"role": "user", "content": "hello"}]
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        listed = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
        assert listed[:2] == ["chat", "coder"]
        for model in ("coder", "chat", "coder"):
            reply = await http.post(
                "/v1/chat/completions",
                json={"model": model, "messages": hello, "max_tokens": 3},
            )
            assert reply.status_code == 200, reply.text
            running = [m["name"] for m in (await http.get("/api/ps")).json()["models"]]
            assert running == [model]  # max_loaded_models = 1: the other was unloaded
