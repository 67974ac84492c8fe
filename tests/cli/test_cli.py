"""The CLI through Typer's runner (stdout is not a terminal), against a live server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuguard import ConfigError, __version__
from gpuguard._server_file import write_server_file
from gpuguard.cli import app
from gpuguard.cli._samples import write_sample_database, write_sample_documents
from gpuguard.embed import BulkEmbedder
from gpuguard.gateway import ModelGateway
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager
from gpuguard.server import ServerThread, create_app
from gpuguard.server._jobs import IndexingJobs
from gpuguard.settings import LlmSettings, Settings, SourceSettings
from gpuguard.testing import FakeBackend, HashEmbedder

runner = CliRunner()
GIB = 1_000_000_000


@dataclass
class Server:
    url: str
    backend: FakeBackend


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose admin token waits in this user's server file, as `gpuguard serve` does."""
    with pytest.MonkeyPatch.context() as patch:
        runtime = tmp_path_factory.mktemp("runtime")
        runtime.chmod(0o700)
        patch.setenv("XDG_RUNTIME_DIR", str(runtime))
        patch.delenv("GPUGUARD_SERVER__TOKEN", raising=False)
        yield from _server(tmp_path_factory)


def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    backend = FakeBackend(
        ["fake-llm", "other-llm"], sizes={"fake-llm": 2 * GIB, "other-llm": 5 * GIB}
    )
    gateway = ModelGateway(
        backend,
        model="fake-llm",
        gpu_embedder=HashEmbedder(device="cuda"),
        cpu_embedder=HashEmbedder(),
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
            write_server_file(int(url.rsplit(":", 1)[1]), url, app_.state.access.token)
            yield Server(url, backend)


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.output


def test_models_list_load_unload(server: Server) -> None:
    assert invoke("models", "load", "fake-llm", "--url", server.url)[0] == 0
    code, out = invoke("models", "list", "--url", server.url)
    assert code == 0
    assert re.search(r"fake-llm\s+yes\s+\*\s+2\.0 GB\s+2\.0 GB", out), out
    assert re.search(r"other-llm\s+no\s+-\s+-", out), out

    code, out = invoke("models", "load", "other-llm", "--url", server.url)
    assert code == 0, out
    assert re.search(r"^loaded other-llm in \d+\.\d s$", out.splitlines()[-1])
    assert "\r" not in out  # no spinner redrawn over itself when piped
    assert invoke("models", "unload", "other-llm", "--url", server.url)[0] == 0
    code, out = invoke("models", "load", "nope", "--url", server.url)
    assert code == 1
    assert "404" in out


def test_models_list_and_ps_as_json(server: Server) -> None:
    assert invoke("models", "load", "fake-llm", "--url", server.url)[0] == 0
    code, out = invoke("models", "list", "--url", server.url, "--json")
    assert code == 0
    models = {m["model"]: m for m in json.loads(out)["models"]}
    assert models["fake-llm"] == {
        "model": "fake-llm",
        "loaded": True,
        "current": True,
        "size_bytes": 2 * GIB,
        "vram_bytes": 2 * GIB,
        "owned_by": "fake",
    }
    code, out = invoke("ps", "--url", server.url, "--json")
    assert code == 0
    ps = json.loads(out)
    assert ps["holder"] is None
    assert ps["waiters"] == []
    assert {"model": "fake-llm", "processor": "100% GPU", "current": True}.items() <= (
        ps["models"][0].items()
    )


def test_ps_shows_the_loaded_models_and_the_lease(server: Server) -> None:
    assert invoke("models", "load", "fake-llm", "--url", server.url)[0] == 0
    code, out = invoke("ps", "--url", server.url)
    assert code == 0, out
    assert re.search(r"fake-llm \*\s+2\.0 GB\s+2\.0 GB\s+100% GPU\s+-", out), out
    assert "GPU lease: free" in out
    assert "queue: interactive: -; normal: -; background: -" in out


def test_chat_streams_the_answer(server: Server) -> None:
    code, out = invoke("chat", "hello there", "--url", server.url)
    assert code == 0
    assert "echo: hello there" in out


def test_chat_without_a_message_is_a_conversation(server: Server) -> None:
    code, out = invoke(
        "chat", "--url", server.url, stdin="first question\nsecond one\n/clear\nthird\n/bye\n"
    )
    assert code == 0, out
    assert "echo: first question" in out
    assert "echo: second one" in out
    second, third = server.backend.chats[-2:]
    assert [(m.role, m.content) for m in second] == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second one"),
    ]
    assert [m.content for m in third] == ["third"]


def test_status_shows_backend_model_jobs_and_lane(server: Server) -> None:
    code, out = invoke("status", "--url", server.url)
    assert code == 0
    assert "backend fake (ok)  model fake-llm" in out
    assert "jobs none running" in out
    assert "GPU lane" in out
    assert "free" in out
    code, out = invoke("status", "--url", server.url, "--json")
    assert code == 0
    state = json.loads(out)
    assert (state["backend"]["backend"], state["model"], state["jobs"]) == (
        "fake",
        "fake-llm",
        state["jobs"],
    )
    assert state["gpu"]["holder"] is None


def test_status_watch_prints_plain_lines_when_piped(server: Server) -> None:
    code, out = invoke(
        "status", "--url", server.url, "--watch", "--count", "3", "--interval", "0.05"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines, "a piped --watch must print something"
    assert re.match(r"^\d\d:\d\d:\d\d holder free \| queue interactive: -;", lines[0]), lines
    assert "\x1b" not in out  # no cursor movement or colour codes


def test_index_db_and_docs_print_plain_progress(server: Server, tmp_path: Path) -> None:
    url = write_sample_database(tmp_path / "shop.sqlite")
    code, out = invoke("index", "db", url, "--url", server.url)
    assert code == 0, out
    assert "\x1b" not in out
    assert "\r" not in out
    last = out.splitlines()[-1]
    assert re.match(r"^schema-refresh \w+ \(sqlite:///.*shop\.sqlite\): completed ", last), last
    assert "0 error(s)" in last

    documents = write_sample_documents(tmp_path / "d")
    (documents / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    code, out = invoke("index", "docs", str(documents), "--url", server.url)
    assert code == 0, out
    assert "rag-indexing" in out
    assert re.search(r"^  skipped .*broken\.pdf", out, re.MULTILINE), out

    result = runner.invoke(app, ["index", "docs", str(documents), "--url", server.url, "--json"])
    assert result.exit_code == 0
    job = json.loads(result.stdout)
    assert (job["job"], job["status"], job["source"]) == (
        "rag-indexing",
        "completed",
        str(documents),
    )
    assert len(job["issues"]) == 1

    code, out = invoke("index", "db", "nosuchdb://x/y", "--url", server.url)
    assert code == 1
    assert "unsupported database URL scheme" in out


def test_a_successful_run_does_not_colour_its_error_count(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    import gpuguard.cli._jobs

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=300, highlight=False)
    monkeypatch.setattr(gpuguard.cli._jobs, "console", terminal)
    url = write_sample_database(tmp_path / "shop.sqlite")
    code, out = invoke("index", "db", url, "--url", server.url)
    assert code == 0, out
    last = screen.getvalue().splitlines()[-1]
    assert "0 error(s)" in last
    # Only the status word is coloured (green); "0 error(s)" and the numbers stay plain.
    assert re.findall(r"\x1b\[[0-9;]*m", last) == ["\x1b[32m", "\x1b[0m"], last
    assert "\x1b[32mcompleted\x1b[0m" in last


def test_help_names_values_not_types() -> None:
    commands = [
        [],
        ["serve"],
        ["demo"],
        ["chat"],
        ["ps"],
        ["status"],
        ["models", "list"],
        ["models", "load"],
        ["index", "db"],
        ["index", "docs"],
    ]
    for command in commands:
        code, out = invoke(*command, "--help")
        assert code == 0, command
        for noise in ("<bool>", "<str>", "<int", "<float", "{", "}"):
            assert noise not in out, (command, noise, out)
    assert "[OPTIONS] [MESSAGE]" in invoke("chat", "--help")[1]
    assert "DATABASE_URL" in invoke("index", "db", "--help")[1]


def test_every_option_has_help_text() -> None:
    import typer.main

    group = typer.main.get_command(app)

    def walk(command: object, path: str) -> Iterator[tuple[str, object]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    for path, command in walk(group, "gpuguard"):
        for param in getattr(command, "params", []):
            assert getattr(param, "help", None), f"{path}: {param.name} has no help text"


def test_version() -> None:
    assert invoke("--version") == (0, f"gpuguard {__version__}\n")


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
def test_demo_exit_runs_the_start_up_scenario(tmp_path: Path) -> None:
    """The main job on embedded defaults: real llama.cpp on the tiny model, real embedders."""
    code, out = invoke("demo", "--exit", "--data-dir", str(tmp_path))
    assert code == 0, out
    assert "PASS no overlapping GPU operations" in out
    assert "verdict: GOOD" in out
    assert "prewarm" in out
    assert "schema-refresh" in out
    # The second act: the documents' batches on the GPU while it is free, a chat asking for it.
    assert "2. the GPU is free" in out
    assert "rag-indexing: completed" in out
    gpu_batches = re.search(r"ran under its own GPU lease \((\d+)\)", " ".join(out.split()))
    assert gpu_batches is not None, out
    assert int(gpu_batches.group(1)) > 0, out
    assert "without the guard:" in out


def test_holder_text_shows_where_and_whether_hung() -> None:
    from gpuguard.cli._render import holder_text, processor_text, queue_text

    holder = {
        "lease_id": 3,
        "operation": "load",
        "model": "big",
        "priority": "normal",
        "since": 1.0,
        "held_s": 42.5,
        "hung": True,
        "hung_s": 12.0,
        "pid": 4242,
        "host": "gpu-box",
        "new_field": "x",
        "nested": {"a": 1},
    }
    assert holder_text(holder) == (
        "load big (normal, 42.5 s, HUNG for 12 s, pid 4242, host gpu-box, new field x)"
    )
    assert holder_text(None) == "free"
    waiter = {"operation": "chat", "priority": "interactive", "position": 1, "pid": 7}
    assert queue_text([waiter]) == "interactive: #1 chat (pid 7); normal: -; background: -"
    assert processor_text(4 * GIB, 3 * GIB) == "25%/75% CPU/GPU"
    assert processor_text(4 * GIB, 0) == "100% CPU"
    assert processor_text(None, None) == "-"


def test_until_reads_like_ollama_ps() -> None:
    from datetime import UTC, datetime

    from gpuguard.cli._render import until_text

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert until_text("2026-01-01T12:04:00Z", now) == "in 4 min"
    assert until_text("2026-01-01T12:00:30+00:00", now) == "in 30 s"
    assert until_text("2318-01-01T00:00:00Z", now) == "forever"
    assert until_text("2025-12-31T00:00:00Z", now) == "now"
    assert until_text(None, now) == "-"


def test_models_load_says_whom_it_waits_for_and_how_long() -> None:
    import threading

    import httpx

    backend = FakeBackend(["fake-llm", "other-llm"], load_delay_s=2.0)
    gateway = ModelGateway(backend, model="fake-llm")
    app_ = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    admin = {"Authorization": f"Bearer {app_.state.access.token}"}
    with ServerThread(app_) as url:
        first = threading.Thread(
            target=httpx.post,
            args=(f"{url}/admin/models/load",),
            kwargs={"json": {"model": "other-llm"}, "timeout": 30, "headers": admin},
        )
        first.start()
        try:
            for _ in range(200):  # a bounded readiness poll: until the first load holds the GPU
                if httpx.get(f"{url}/admin/gpu?recent=0", headers=admin).json()["current"]:
                    break
            token = app_.state.access.token
            code, out = invoke("models", "load", "fake-llm", "--url", url, "--token", token)
        finally:
            first.join()
    assert code == 0, out
    lines = out.splitlines()
    assert re.match(r"^waiting for the GPU \(held by load\) \(\d+\.\d s\)$", lines[0]), lines
    assert re.match(r"^loaded fake-llm in \d+\.\d s$", lines[-1]), lines
