"""Finding Foundry Local's dynamic port with its CLI (a fake ``foundry`` script on PATH)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from gpuguard import BackendTimeout, BackendUnavailable
from gpuguard.llm import FoundryLocalBackend, Timeouts, discover_foundry_endpoint
from gpuguard.testing.foundry_double import FoundryDouble

SLEEP = shutil.which("sleep")
LEGACY_OUTPUT = "🟢 Model management service is running on {url}/openai/status"


@pytest.fixture
def fake_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory, alone on PATH, to write a fake ``foundry`` into."""
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def install(directory: Path, script: str) -> Path:
    path = directory / "foundry"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


async def test_reads_the_url_printed_by_server_status(fake_cli: Path) -> None:
    install(fake_cli, 'echo "Server running at http://127.0.0.1:51234/ (0.10.1)"')
    assert await discover_foundry_endpoint() == "http://127.0.0.1:51234"


async def test_falls_back_to_the_legacy_service_status(fake_cli: Path) -> None:
    log = fake_cli / "calls.log"
    install(
        fake_cli,
        f'echo "$@" >> {log}\n'
        'if [ "$1" = server ]; then echo "Unknown command: server" >&2; exit 1; fi\n'
        'echo "' + LEGACY_OUTPUT.format(url="http://127.0.0.1:5273") + '"',
    )
    assert await discover_foundry_endpoint() == "http://127.0.0.1:5273"
    assert log.read_text().splitlines() == ["server status", "service status"]


async def test_missing_cli_is_unavailable(fake_cli: Path) -> None:
    with pytest.raises(BackendUnavailable, match="not on PATH"):
        await discover_foundry_endpoint()


async def test_not_running_is_unavailable(fake_cli: Path) -> None:
    install(fake_cli, 'echo "🔴 Model management service is not running!"')
    with pytest.raises(BackendUnavailable, match="not running"):
        await discover_foundry_endpoint()


async def test_a_hanging_cli_times_out_and_is_killed(fake_cli: Path) -> None:
    install(fake_cli, f"exec {SLEEP} 30")
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await discover_foundry_endpoint(timeout_s=0.2)
    assert time.monotonic() - started < 5


async def test_backend_without_url_discovers_the_double(
    fake_cli: Path, foundry_double: FoundryDouble, timeouts: Timeouts
) -> None:
    install(fake_cli, 'echo "' + LEGACY_OUTPUT.format(url=foundry_double.base_url) + '"')
    backend = FoundryLocalBackend(timeouts=timeouts)
    assert backend.base_url is None
    await backend.load("phi-4-mini")
    assert backend.base_url == foundry_double.base_url
    assert foundry_double.loaded == ["phi-4-mini"]
    await backend.aclose()


async def test_backend_health_reports_a_missing_cli(fake_cli: Path) -> None:
    health = await FoundryLocalBackend().health()
    assert not health.ok
    assert "not on PATH" in health.detail
