"""Every code block in the README and docs/ runs, or is checked the way its reader would use it.

- ``python``: run as a script in a child process, against a live server (the fake backend
  under the model names the docs use) and the local Redis where the docs name theirs;
- ``toml``: loaded as a settings file (an unknown or invalid key fails);
- ``bash``: each ``gpuguard`` command line is parsed by the CLI itself (an unknown command
  or option fails), with its ``GPUGUARD_*`` assignments loaded as settings; other programs
  must be listed in :data:`OTHER_PROGRAMS` with where they are exercised;
- ``yaml`` and ``json``: parsed.

A fence without a language is shown output (benchmark tables, trees), not code.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from gpuguard.cli import app
from gpuguard.gateway import ModelGateway
from gpuguard.server import ServerThread, create_app
from gpuguard.settings import LlmSettings, Settings, load_settings
from gpuguard.testing import FakeBackend

# PyYAML ships no type information; imported by name so that strict mypy needs no stubs.
yaml = importlib.import_module("yaml")

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = frozenset({"python", "toml", "bash", "yaml", "json"})

OTHER_PROGRAMS = {
    "make": "the Makefile's targets are what CI runs",
    "curl": "tests/server/test_readme_ollama.py runs the README's curl lines",
    "pip": "installs a client; the clients' own tests use them",
    "docker": "Open WebUI's container; its requests are replayed in tests/clients",
    "open-webui": "Open WebUI itself; its requests are replayed in tests/clients",
    "llama-server": "the real llama-server is built and run by tests/llm",
    "vllm": "a GPU server that cannot run here",
    "lms": "LM Studio's own CLI",
    "foundry": "Foundry Local's own CLI; its double follows its API",
}

# Where the docs name servers a reader has, and what the test puts there instead.
LIVE_URL = "http://127.0.0.1:8765"
REDIS_URL = "redis://redis.internal:6379/0"
LOCAL_REDIS = "redis://127.0.0.1:6379/15"
SCRIPT_DEADLINE_S = 120  # a net against a wedged script, not a speed test


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is and what it says."""

    document: str
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.document}:{self.line}"


def blocks() -> Iterator[Block]:
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
            line = text.count("\n", 0, match.start()) + 1
            yield Block(document.name, line, match.group(1), match.group(2))


def of(language: str) -> list[Block]:
    return [block for block in blocks() if block.language == language]


def test_every_block_has_a_language_this_test_runs() -> None:
    unknown = [str(b) for b in blocks() if b.language and b.language not in LANGUAGES]
    assert unknown == []


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    backend = FakeBackend(["tiny-random", "phi-4"])
    gateway = ModelGateway(backend, model="tiny-random")
    app_ = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    with ServerThread(app_) as url:
        yield url


@pytest.mark.parametrize("block", of("python"), ids=str)
def test_python_blocks_run(block: Block, live_url: str) -> None:
    script = block.text.replace(LIVE_URL, live_url).replace(REDIS_URL, LOCAL_REDIS)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=SCRIPT_DEADLINE_S,
        check=False,
    )
    assert done.returncode == 0, f"{block}\n{done.stderr}"


@pytest.mark.parametrize("block", of("toml"), ids=str)
def test_toml_blocks_are_valid_settings(block: Block, tmp_path: Path) -> None:
    config = tmp_path / "gpuguard.toml"
    config.write_text(block.text)
    load_settings(config)


def _command_lines(block: Block) -> Iterator[list[str]]:
    for line in block.text.splitlines():
        # A command substitution ($(openssl rand -hex 24)) stands for the value it prints.
        words = shlex.split(re.sub(r"\$\([^)]*\)", "substituted-value", line), comments=True)
        if words:
            yield words


@pytest.mark.parametrize("block", of("bash"), ids=str)
def test_bash_blocks_name_real_commands(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    group = typer.main.get_command(app)
    for words in _command_lines(block):
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            monkeypatch.setenv(name, value)
        program, args = words[0], words[1:]
        if program != "gpuguard":
            assert program in OTHER_PROGRAMS, f"{block}: which test runs {program!r}?"
            continue
        load_settings()  # the line's own GPUGUARD_* assignments are valid settings
        _parse(group, args, block)


def _parse(command: Any, args: list[str], block: Block) -> None:
    """Parse ``args`` as the CLI would, without running the command.

    (Typer's commands are its own vendored click's: duck-typed here.)
    """
    path = ["gpuguard"]
    while hasattr(command, "get_command") and args and not args[0].startswith("-"):
        sub = command.get_command(typer.Context(command), args[0])
        assert sub is not None, f"{block}: no command {' '.join([*path, args[0]])!r}"
        path.append(args.pop(0))
        command = sub
    assert not hasattr(command, "get_command"), f"{block}: {' '.join(path)} needs a command"
    try:
        command.make_context(" ".join(path), list(args))
    except Exception as exc:  # the vendored click's UsageError
        pytest.fail(f"{block}: {' '.join(path)} {' '.join(args)}: {exc}")


@pytest.mark.parametrize("block", of("yaml"), ids=str)
def test_yaml_blocks_parse(block: Block) -> None:
    assert yaml.safe_load(block.text) is not None


@pytest.mark.parametrize("block", of("json"), ids=str)
def test_json_blocks_parse(block: Block) -> None:
    for line in block.text.splitlines():
        json.loads(line)
