"""A database that fails: the operator's CLI gets the reason; a wrong name lists the names."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuguard.cli import app
from gpuguard.cli._samples import write_sample_database

from .conftest import indexing_server

runner = CliRunner()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    shop = write_sample_database(tmp_path / "shop.sqlite")
    with indexing_server(tmp_path, databases={"shop": shop, "archive": shop}) as server:
        yield server.url


def test_an_unknown_source_name_lists_the_names(url: str) -> None:
    result = runner.invoke(app, ["index", "db", "warehouse", "--url", url])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "no database source named 'warehouse' (configured: archive, shop;" in text, text
    assert "parse" not in text.lower()


def test_a_named_source_is_indexed(url: str) -> None:
    result = runner.invoke(app, ["index", "db", "shop", "--url", url])
    assert result.exit_code == 0, result.output


def test_the_reason_is_on_the_console_and_the_cli_says_so(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port()
    target = f"postgresql://someone:secret@127.0.0.1:{port}/db"
    with caplog.at_level(logging.WARNING, logger="gpuguard.jobs"):
        result = runner.invoke(app, ["index", "db", target, "--url", url])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "could not connect to the database source" in out, out
    assert "the server's console has the full reason" in out, out
    assert "secret" not in out
    # The console is a handler of the operator's: it gets the driver's own words.
    said = [r.getMessage() for r in caplog.records if r.name == "gpuguard.jobs"]
    assert any("refused" in line.lower() for line in said), said
    assert not any("secret" in line for line in said), said
