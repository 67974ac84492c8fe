"""The conversation's slash commands, as Ollama's REPL has them: never sent to the model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from gpuguard.cli import app
from gpuguard.gateway import ModelGateway
from gpuguard.server import create_app
from gpuguard.settings import LlmSettings, Settings
from gpuguard.testing import FakeBackend

from .conftest import serving

runner = CliRunner()


@pytest.fixture
def served() -> Iterator[tuple[str, FakeBackend]]:
    backend = FakeBackend(["fake-llm", "other-llm"])
    gateway = ModelGateway(backend, model="fake-llm")
    app_ = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    with serving(app_) as url:
        yield url, backend


def converse(url: str, lines: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["chat", "--url", url], input=lines)
    return result.exit_code, result.stdout, result.stderr


def test_help_and_unknown_commands_never_reach_the_model(
    served: tuple[str, FakeBackend],
) -> None:
    url, backend = served
    code, out, err = converse(url, "/help\n/?\n/bogus thing\nhello\n/bye\nnot sent\n")
    assert code == 0, err
    assert err.count("/load MODEL") == 2  # once per help
    assert "Unknown command '/bogus thing'. Type /? for help" in err
    assert [[m.content for m in chat] for chat in backend.chats] == [["hello"]]
    assert "echo: hello" in out


def test_load_switches_the_model_and_show_says_which(served: tuple[str, FakeBackend]) -> None:
    url, backend = served
    code, _, err = converse(url, "one\n/load other-llm\n/show\ntwo\n/exit\n")
    assert code == 0, err
    assert "model other-llm, 1 turn(s)" in err
    assert len(backend.chats) == 2
    assert [m.content for m in backend.chats[1]] == ["one", "echo: one", "two"]


def test_load_without_a_model_says_how(served: tuple[str, FakeBackend]) -> None:
    url, backend = served
    code, _, err = converse(url, "/load\n/quit\n")
    assert code == 0
    assert "usage: /load MODEL" in err
    assert backend.chats == []
