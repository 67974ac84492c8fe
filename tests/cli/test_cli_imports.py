"""The CLI imports what its command needs: ``--version`` and ``--help`` read no settings,
talk to no server and draw nothing, so pydantic, httpx and rich stay unimported."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = {"pydantic_settings", "httpx", "rich", "numpy", "fastapi", "asyncio"}


def imported(*argv: str) -> set[str]:
    """The top-level packages ``python -m gpuguard ARGV`` imports (``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gpuguard", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "gpuguard" in names, done.stderr[-2000:]
    return names


@pytest.mark.parametrize(
    ("argv", "forbidden"),
    [
        (("--version",), HEAVY | {"pydantic"}),
        (("--help",), HEAVY | {"pydantic"}),
        # Typer itself reads some parameter types with pydantic: the settings stay out.
        (("models", "--help"), HEAVY),
    ],
)
def test_version_and_help_import_no_settings_client_or_renderer(
    argv: tuple[str, ...], forbidden: set[str]
) -> None:
    assert sorted(imported(*argv) & forbidden) == []


def test_version_prints_the_version() -> None:
    from gpuguard import __version__

    done = subprocess.run(
        [sys.executable, "-m", "gpuguard", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == f"gpuguard {__version__}"
