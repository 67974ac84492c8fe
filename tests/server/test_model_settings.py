"""``[models."NAME"]`` sections and strict settings: names and aliases reach the backend's
ids, the configured context bounds retrieval, and a misspelt key is an error that says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuguard import ConfigError
from gpuguard.cli._app import _llm_overrides
from gpuguard.llm import ChatMessage
from gpuguard.server import open_runtime
from gpuguard.settings import load_settings
from gpuguard.testing import FakeBackend

from .conftest import EMBEDDER, LiveFactory, until

BACKEND_ID = "qwen2.5:0.5b-instruct-q4_K_M"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[llm]\nbase-url = "http://x"\n',
            "llm.base-url: unknown setting; did you mean 'base_url'?",
        ),
        ("[server]\nbogus = 1\n", "server.bogus: unknown setting; valid keys here: allowed_hosts,"),
        ("bogus = 1\n", "bogus: unknown setting"),
        ("[sources]\ndocument_root = []\n", "did you mean 'document_roots'?"),
        ('[models."m"]\ncontxt_size = 9\n', "models.m.contxt_size: unknown setting; did you mean"),
        ("[guard]\nmax_waiter = 3\n", "did you mean 'max_waiters'?"),
    ],
)
def test_an_unknown_key_anywhere_is_an_error_naming_it(
    tmp_path: Path, toml: str, message: str
) -> None:
    config = tmp_path / "gpuguard.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert message in str(caught.value)


def test_an_unknown_environment_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUGUARD_LLM__MODLE", "x")
    with pytest.raises(ConfigError, match=r"llm\.modle: unknown setting; did you mean 'model'"):
        load_settings()


def test_models_sections_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "gpuguard.toml"
    config.write_text(
        '[llm]\nbackend = "ollama"\nmodel = "chat"\n'
        f'[models."chat"]\nid = "{BACKEND_ID}"\naliases = ["gpt-4o-mini"]\ncontext_size = 8192\n'
        '[models."coder"]\nprewarm = true\n'
    )
    settings = load_settings(config)
    assert settings.model_name == BACKEND_ID
    assert settings.models["chat"].aliases == ["gpt-4o-mini"]
    assert settings.models["coder"].prewarm


def test_one_alias_for_two_models_is_refused() -> None:
    with pytest.raises(ConfigError, match="'x' names both"):
        load_settings(models={"a": {"aliases": ["x"]}, "x": {}})


async def test_names_and_aliases_reach_the_backend_by_its_id(make_live: LiveFactory) -> None:
    backend = FakeBackend([BACKEND_ID, "other"])
    models = {"chat": {"id": BACKEND_ID, "aliases": ["gpt-4o-mini"], "context_size": 4096}}
    async with make_live(backend=backend, models=models) as live:
        listed = [m.id for m in (await live.client.models.list()).data]
        assert listed == ["chat", "other", EMBEDDER]
        by_alias = await live.client.models.retrieve("gpt-4o-mini")
        assert by_alias.id == "chat"
        assert by_alias.model_extra is not None
        assert by_alias.model_extra["gpuguard"]["aliases"] == ["gpt-4o-mini"]
        reply = await live.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "echo: hi"
        assert reply.model == "gpt-4o-mini"
    assert ("chat", BACKEND_ID) in backend.calls


async def test_the_configured_context_bounds_retrieval(make_live: LiveFactory) -> None:
    async def retriever(question: str) -> list[str]:
        return ["alpha " * 10, "beta " * 10]

    backend = FakeBackend([BACKEND_ID])  # the backend itself knows no context size
    models = {"chat": {"id": BACKEND_ID, "context_size": 30}}
    async with make_live(backend=backend, models=models, retriever=retriever) as live:
        reply = await live.client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hello there"}],
            max_tokens=5,
            extra_body={"retrieval": True},
        )
    # 25 tokens of room: the question (2), the preamble (8) and one passage (11).
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 2 + 8 + 11


async def test_prewarm_models_are_loaded_at_start(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        llm={"backend": "fake"},
        embeddings={"gpu_engine": "none", "cpu_engine": "hash"},
        models={"coder": {"id": "coder-7b", "prewarm": True}, "idle": {}},
    )
    async with open_runtime(settings) as runtime:
        backend = runtime.gateway.backend
        assert isinstance(backend, FakeBackend)
        await until(lambda: {"fake-llm", "coder-7b"} <= backend.loaded)
        assert "idle" not in backend.loaded
        loads = [
            event.to_dict()["operation"]
            for event in runtime.gateway.guard.events.history(kinds={"gpu"})
        ]
        assert "prewarm" in loads  # under the GPU lease


def test_serve_flags_choose_the_backend_and_model() -> None:
    assert _llm_overrides("ollama", "llama3.2") == {"backend": "ollama", "model": "llama3.2"}
    assert _llm_overrides(None, "models/x.gguf") == {"model_path": Path("models/x.gguf")}
    settings = load_settings(llm=_llm_overrides("ollama", "llama3.2"))
    assert (settings.llm.backend, settings.model_name) == ("ollama", "llama3.2")


async def test_a_models_priority_is_the_lease_priority_of_its_chats(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        llm={"backend": "fake"},
        embeddings={"gpu_engine": "none", "cpu_engine": "hash"},
        models={"batch": {"id": "batch-7b", "priority": "background"}, "chat": {}},
    )
    async with open_runtime(settings, start=False) as runtime:
        gateway = runtime.gateway
        for model in ("batch-7b", "chat"):
            await gateway.complete([ChatMessage("user", "hi")], model=model)
        started = {
            e.to_dict()["model"]: e.to_dict()["priority"]
            for e in gateway.guard.events.history(kinds={"gpu"})
            if e.to_dict()["operation"] == "chat" and e.to_dict()["status"] == "started"
        }
    assert started == {"batch-7b": "background", "chat": "interactive"}
