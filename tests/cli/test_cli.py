"""The CLI through Typer's runner, against a live server in a background thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuguard import ConfigError
from gpuguard._settings import LlmSettings, Settings, SourceSettings
from gpuguard.cli import app
from gpuguard.cli._samples import write_sample_database, write_sample_documents
from gpuguard.embed import BulkEmbedder
from gpuguard.gateway import ModelGateway
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager
from gpuguard.server import ServerThread, create_app
from gpuguard.server._jobs import IndexingJobs
from gpuguard.testing import FakeBackend, HashEmbedder

runner = CliRunner()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gpu = HashEmbedder(device="cuda")
    cpu = HashEmbedder()
    gateway = ModelGateway(
        FakeBackend(["fake-llm", "other-llm"]),
        model="fake-llm",
        gpu_embedder=gpu,
        cpu_embedder=cpu,
    )
    assert gateway.embedders is not None
    folder = tmp_path_factory.mktemp("cli")
    with VectorStore(folder / "index.db") as store:
        jobs = IndexingJobs(
            JobManager(events=gateway.events),
            store=store,
            bulk=BulkEmbedder(gateway.embedders, gateway.guard, batch_size=8),
            events=gateway.events,
            sources=SourceSettings(document_roots=[tmp_path_factory.getbasetemp()]),
        )
        app_ = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway, jobs=jobs)
        with ServerThread(app_) as url:
            yield url


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_models_list_load_unload(server: str) -> None:
    code, out = invoke("models", "list", "--url", server)
    assert code == 0
    assert "fake-llm" in out
    assert "other-llm" in out
    assert invoke("models", "load", "other-llm", "--url", server) == (0, "loaded other-llm\n")
    assert invoke("models", "unload", "other-llm", "--url", server)[0] == 0
    code, out = invoke("models", "load", "nope", "--url", server)
    assert code == 1
    assert "404" in out


def test_chat_streams_the_answer(server: str) -> None:
    code, out = invoke("chat", "hello there", "--url", server)
    assert code == 0
    assert "echo: hello there" in out


def test_status_once_and_watch(server: str) -> None:
    code, out = invoke("status", "--url", server)
    assert code == 0
    assert "GPU lane" in out
    assert "free" in out
    code, out = invoke("status", "--url", server, "--watch", "--count", "2", "--interval", "0.05")
    assert code == 0
    assert "holder" in out


def test_index_db_and_docs_with_progress(server: str, tmp_path: Path) -> None:
    url = write_sample_database(tmp_path / "shop.sqlite")
    code, out = invoke("index", "db", url, "--url", server)
    assert code == 0, out
    assert "completed" in out
    code, out = invoke(
        "index", "docs", str(write_sample_documents(tmp_path / "d")), "--url", server
    )
    assert code == 0, out
    assert "completed" in out
    code, out = invoke("index", "db", "nosuchdb://x/y", "--url", server)
    assert code == 1
    assert "unsupported database URL scheme" in out


def test_no_server_is_a_clear_error() -> None:
    code, out = invoke("models", "list", "--url", "http://127.0.0.1:9")
    assert code == 1
    assert "no gpuguard server answers" in out


def test_serve_flags_set_what_callers_may_index_and_the_names_answered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import gpuguard.server

    built: list[Settings] = []

    def capture(settings: Settings) -> None:
        built.append(settings)
        raise ConfigError("captured")

    monkeypatch.setattr(gpuguard.server, "create_app", capture)
    code, _ = invoke(
        "serve",
        "--document-root",
        str(tmp_path),
        "--database-host",
        "db.lan",
        "--database-host",
        "10.0.0.0/8",
        "--allowed-host",
        "gpu.lan",
    )
    assert code == 2
    settings = built[0]
    assert settings.sources.document_roots == [tmp_path]
    assert settings.sources.database_hosts == ["db.lan", "10.0.0.0/8"]
    assert settings.server.allowed_hosts == ["gpu.lan"]


def test_serve_refuses_a_public_host_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUGUARD_SERVER__TOKEN", raising=False)
    code, out = invoke("serve", "--host", "0.0.0.0")
    assert code == 2
    assert "bearer token" in out


@pytest.mark.slow
def test_demo_exit_runs_the_seed_scenario(tmp_path: Path) -> None:
    """The main job on embedded defaults: real llama.cpp on the tiny model, real embedders."""
    code, out = invoke("demo", "--exit", "--data-dir", str(tmp_path))
    assert code == 0, out
    assert "PASS no overlapping GPU operations" in out
    assert "verdict: GOOD" in out
    assert "prewarm" in out
    assert "schema-refresh" in out
