"""``gpuguard serve`` tells its console what it is doing: start-up facts, then failures."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gpuguard._events import GpuEvent, GpuStatus, JobEvent, ModelEvent, Priority
from gpuguard.server._console import EventLog

from .conftest import CHILD_DEADLINE_S, read_line


@pytest.fixture
def fake_server_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for a server over the fake backend and the hashing embedder."""
    settings = {
        "GPUGUARD_LLM__BACKEND": "fake",
        "GPUGUARD_EMBEDDINGS__GPU_ENGINE": "none",
        "GPUGUARD_EMBEDDINGS__CPU_ENGINE": "hash",
        "GPUGUARD_DATA_DIR": str(tmp_path / "data"),
        "GPUGUARD_SERVER__PORT": "0",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **settings}


def _serve(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    code = "from gpuguard.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "serve", *args],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
    )


def test_the_console_says_what_started_and_where(fake_server_env: dict[str, str]) -> None:
    process = _serve(fake_server_env)
    lines: list[str] = []
    try:
        assert process.stderr is not None
        while not lines or "serving on" not in lines[-1]:
            lines.append(read_line(process.stderr))
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=CHILD_DEADLINE_S)
    finally:
        process.kill()
    text = "".join(lines)
    assert "INFO    backend fake, model fake-llm" in text, text
    assert "GPU lease gpu0: scope host, lock dir " in text, text
    assert "policy exclusive" in text, text
    assert "embeddings: GPU none, CPU hash" in text, text
    assert lines[-1].rstrip().split()[-1].startswith("http://127.0.0.1:"), lines
    assert "serving on" not in "".join(lines[:-1])
    assert process.returncode == 0, rest


def _serve_once(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run ``gpuguard serve ARGS`` to its end (a child that would serve instead is killed)."""
    process = _serve(env, *args)
    try:
        out, err = process.communicate(timeout=CHILD_DEADLINE_S)
    finally:
        process.kill()
    return process.returncode, (out + err).decode()


def test_a_port_in_use_is_an_error_and_never_serving_on(fake_server_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = _serve_once(fake_server_env, "--port", str(port))
    assert code == 1, output
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in output
    assert "serving on" not in output


def test_a_missing_model_file_is_named_at_start(fake_server_env: dict[str, str]) -> None:
    env = {**fake_server_env, "GPUGUARD_LLM__BACKEND": "llama-cpp"}
    code, output = _serve_once(env, "--model", "nope.gguf")
    assert code == 2, output
    assert "the model file 'nope.gguf' does not exist" in output


def _gpu(status: GpuStatus, **fields: object) -> GpuEvent:
    return GpuEvent("gpu0", "chat", "m", status, 0.0, 1, Priority.INTERACTIVE, **fields)  # type: ignore[arg-type]


def test_failures_reach_the_log_with_their_reasons(caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog()
    with caplog.at_level(logging.INFO, logger="gpuguard"):
        log(JobEvent("j1", "rag-indexing", "started", 0.0))
        log(JobEvent("j1", "rag-indexing", "progress", 0.0, done=1))
        log(JobEvent("j1", "rag-indexing", "progress", 0.0, issue="a.bin: unsupported type"))
        log(JobEvent("j1", "rag-indexing", "failed", 0.0, detail="database refused: password"))
        log(ModelEvent("big", "failed", "ollama", 0.0, detail="out of memory"))
        log(_gpu(GpuStatus.HUNG, detail="past 600 s"))
        log(_gpu(GpuStatus.STARTED))
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [
        (logging.INFO, "job j1 (rag-indexing) started"),
        (logging.WARNING, "job j1 (rag-indexing) skipped a.bin: unsupported type"),
        (logging.ERROR, "job j1 (rag-indexing) failed: database refused: password"),
        (logging.ERROR, "model big failed on ollama: out of memory"),
        (logging.ERROR, "GPU chat hung [m]: past 600 s"),
    ]
