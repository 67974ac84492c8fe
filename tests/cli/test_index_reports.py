"""What ``gpuguard index docs`` reports: every skipped file by name, and an empty folder."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gpuguard.cli import app

from .conftest import indexing_server

runner = CliRunner()


def test_every_skipped_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "notes.txt").write_text("the cat sat on the mat")
    for name in ("image.png", "archive.zip", "tool.exe"):
        (folder / name).write_bytes(b"\x00\x01")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    with indexing_server(tmp_path) as server:
        result = runner.invoke(app, ["index", "docs", str(folder), "--url", server.url])
        as_json = runner.invoke(app, ["index", "docs", str(folder), "--url", server.url, "--json"])
    assert result.exit_code == 0, result.output
    assert "4 error(s)" in result.stdout
    skipped = [line for line in result.stdout.splitlines() if line.startswith("  skipped ")]
    for name in ("image.png", "archive.zip", "tool.exe", "broken.pdf"):
        assert sum(name in line for line in skipped) == 1, (name, skipped)
    job = json.loads(as_json.stdout)
    assert len(job["issues"]) == len(job["result"]["errors"])


def test_an_empty_folder_says_nothing_was_found(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "only.png").write_bytes(b"\x89PNG")
    with indexing_server(tmp_path) as server:
        result = runner.invoke(app, ["index", "docs", str(empty), "--url", server.url])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "nothing to index: no supported document (" in text, text
    assert f") in {empty}" in text
    assert "only.png" in text
