"""The README's Ollama curl examples, run as written against a live server (the generated
tiny model, the test embedder under the default embedding model's name)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from gpuguard.server import create_app, ollama_app, running_server
from gpuguard.settings import load_settings

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Ollama clients: Open WebUI, Continue, curl"
OLLAMA_URL = "http://127.0.0.1:11434"
CURL_TIMEOUT_S = 60


def _curl_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


def test_the_readme_shows_every_documented_route() -> None:
    commands = " ".join(_curl_commands())
    for route in ("version", "tags", "chat", "generate", "embed", "ps"):
        assert f"{OLLAMA_URL}/api/{route}" in commands


@pytest.fixture
def curl() -> str:
    found = shutil.which("curl")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl must be installed when CI=true")
        pytest.skip("curl is not installed")
    return found


async def test_readme_curl_examples_run(curl: str, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        llm={"backend": "llama-cpp"},
        embeddings={"gpu_engine": "hash", "cpu_engine": "hash"},
    )
    app = create_app(settings)
    answers = []
    async with running_server(app), running_server(ollama_app(app)) as url:
        for command in _curl_commands():
            argv = shlex.split(command.replace(OLLAMA_URL, url))
            process = await asyncio.create_subprocess_exec(
                curl, *argv[1:], "--max-time", str(CURL_TIMEOUT_S), stdout=asyncio.subprocess.PIPE
            )
            stdout, _ = await asyncio.wait_for(process.communicate(), CURL_TIMEOUT_S + 5)
            assert process.returncode == 0, command
            lines = [json.loads(line) for line in stdout.decode().splitlines() if line]
            assert lines, command
            assert all("error" not in line for line in lines), (command, lines)
            answers.append(lines)
    version, tags, chat, generate, embed, ps, unload = answers
    assert "tiny-random" in [m["name"] for m in tags[0]["models"]]
    assert chat[-1]["done"] is True
    assert len(chat) > 1
    assert generate[0]["done"] is True
    assert len(embed[0]["embeddings"]) == 2
    running = {m["name"]: m for m in ps[0]["models"]}
    assert list(running) == ["tiny-random", "all-MiniLM-L6-v2"]
    assert running["all-MiniLM-L6-v2"]["size"] > 20_000_000
    assert unload[0]["done_reason"] == "unload"
    assert version[0]["version"]
