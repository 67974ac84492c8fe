"""Every command finds the server one way: --url, else the settings the server reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from gpuguard.cli import app
from gpuguard.gateway import ModelGateway
from gpuguard.server import ServerThread, create_app, ollama_app
from gpuguard.settings import LlmSettings, Settings
from gpuguard.testing import FakeBackend
from gpuguard.testing.ollama_double import OllamaDouble

from .conftest import serving

runner = CliRunner()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    """A gpuguard server and its Ollama port: their URLs."""
    gateway = ModelGateway(FakeBackend(["fake-llm"]), model="fake-llm")
    main = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    with serving(main) as url, ServerThread(ollama_app(main)) as ollama_url:
        yield url, ollama_url


@pytest.fixture(autouse=True)
def no_address_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GPUGUARD_URL", "GPUGUARD_CONFIG", "GPUGUARD_SERVER__PORT"):
        monkeypatch.delenv(name, raising=False)


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def port_of(url: str) -> str:
    return str(urlsplit(url).port)


def test_every_command_follows_the_port_setting(
    served: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUGUARD_SERVER__PORT", port_of(served[0]))
    for command in (["models", "list"], ["ps"], ["status"], ["chat", "hi"]):
        code, out = invoke(*command)
        assert code == 0, (command, out)


def test_the_settings_file_names_the_port(
    served: tuple[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "gpuguard.toml"
    config.write_text(f"[server]\nport = {port_of(served[0])}\n")
    monkeypatch.setenv("GPUGUARD_CONFIG", str(config))
    code, out = invoke("status")
    assert code == 0, out
    assert "fake-llm" in out


def test_url_beats_the_settings(served: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUGUARD_SERVER__PORT", "9")
    code, out = invoke("ps", "--url", served[0])
    assert code == 0, out


def test_invalid_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUGUARD_SERVER__PORT", "not-a-port")
    code, out = invoke("ps")
    assert code == 2
    assert "server.port" in out


def test_the_ollama_port_is_named(served: tuple[str, str]) -> None:
    code, out = invoke("models", "list", "--url", served[1])
    assert code == 1
    assert "gpuguard's Ollama port" in out
    assert "main port" in out


def test_a_path_after_the_port_is_named(served: tuple[str, str]) -> None:
    code, out = invoke("status", "--url", f"{served[0]}/v1")
    assert code == 1
    assert f"gpuguard answers at {served[0]}, not under /v1" in " ".join(out.split())


def test_ollama_itself_is_named() -> None:
    with OllamaDouble() as ollama:
        code, out = invoke("ps", "--url", ollama.base_url)
    assert code == 1
    assert "is an Ollama server" in " ".join(out.split())
    assert "not gpuguard" in out


def test_a_real_404_stays_as_it_is(served: tuple[str, str]) -> None:
    code, out = invoke("models", "load", "nope", "--url", served[0])
    assert code == 1
    assert "404" in out
    assert "not a gpuguard server" not in out


def test_demo_serves_on_the_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpuguard.cli._demo

    ports: list[int] = []

    async def capture(console: object, *, data_dir: Path, port: int, serve: bool) -> bool:
        ports.append(port)
        return True

    monkeypatch.setattr(gpuguard.cli._demo, "run_demo", capture)
    monkeypatch.setenv("GPUGUARD_SERVER__PORT", "8999")
    assert invoke("demo")[0] == 0
    assert invoke("demo", "--port", "8111")[0] == 0
    assert ports == [8999, 8111]
