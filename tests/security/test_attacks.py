"""Each hole of the security review, tried over HTTP as an attacker or a careless user would.

Every request goes to a live server on 127.0.0.1; every database URL names a loopback
address, a listener of the test's own, or a ``.invalid`` host that nothing answers for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

import httpx
import pytest

from gpuguard.server import ollama_app, running_server

from .conftest import SECRET, ServeFactory, write_docx_bomb


def closed_port() -> int:
    """A loopback port nobody listens on (just released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- 1. any local file read through schema refresh -------------------------------------------


@pytest.mark.parametrize(
    ("url", "option"),
    [
        ("mysql+pymysql://root@127.0.0.1:3306/test?local_infile=1", "local_infile"),
        ("mysql://root@127.0.0.1/test?read_default_file=/etc/passwd", "read_default_file"),
        ("mariadb://root@127.0.0.1/test?init_command=SELECT+1", "init_command"),
        ("mysql://root@127.0.0.1/test?ssl_key=/etc/ssl/private/key.pem", "ssl_key"),
        ("postgresql://postgres@127.0.0.1/test?sslrootcert=/etc/passwd", "sslrootcert"),
        ("postgres://postgres@127.0.0.1/test?options=-c+log_statement%3Dall", "options"),
        ("postgresql://postgres@127.0.0.1/test?sslmode=verify-full", "sslmode"),
        ("sqlite:///docs/x.db?uri=true", "uri"),
    ],
)
async def test_driver_options_beyond_the_safe_list_are_refused(
    serve: ServeFactory, url: str, option: str
) -> None:
    async with serve() as server:
        response = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert option in message
        assert "not allowed" in message
        assert (await server.http.get("/admin/jobs")).json()["jobs"] == []


# --- 2. any file or folder indexed and read back through chat --------------------------------


@pytest.mark.parametrize("path", ["/etc", "/etc/passwd", "docs/outside-folder"])
async def test_documents_outside_the_roots_are_refused(serve: ServeFactory, path: str) -> None:
    async with serve() as server:
        response = await server.http.post("/admin/jobs/rag", json={"path": path})
        assert response.status_code == 400
        assert "outside the allowed document roots" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", [".ssh", ".ssh/id_rsa.md", "docs/.env"])
async def test_hidden_files_and_folders_are_refused(serve: ServeFactory, path: str) -> None:
    async with serve() as server:
        response = await server.http.post("/admin/jobs/rag", json={"path": path})
        assert response.status_code == 400
        assert "hidden" in response.json()["error"]["message"]


async def test_links_out_of_the_folder_are_not_followed_and_never_reach_the_prompt(
    serve: ServeFactory,
) -> None:
    async with serve() as server:
        started = await server.http.post("/admin/jobs/rag", json={"path": "docs"})
        assert started.status_code == 202
        job = await server.finished_job(started.json())
        assert job["status"] == "completed"
        # What a chat with "retrieval": true puts into the prompt for this question.
        passages = await server.app.state.context.retriever("What is the launch code?")
        assert passages, "the handbook is indexed"
        assert not any(SECRET in passage for passage in passages)

        result = job["result"]
        docs = server.root / "docs"
        assert result["embedded_sources"] == [str(docs / "handbook.md")]
        skipped = {issue["source"]: issue["message"] for issue in result["errors"]}
        assert "outside the allowed document roots" in skipped[str(docs / "link.md")]
        assert "hidden" in skipped[str(docs / ".env")]
        assert "not followed" in skipped[str(docs / "outside-folder")]


# --- 3. probing the network through schema refresh -------------------------------------------


@pytest.mark.parametrize("database", ["/etc/passwd", "/etc/no-such-file-here"])
async def test_sqlite_files_outside_the_roots_are_refused_alike(
    serve: ServeFactory, database: str
) -> None:
    async with serve() as server:
        url = f"sqlite:///{database}"
        response = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert message == f"refused {database!r}: outside the allowed document roots"
        assert "not a database" not in message


async def test_a_file_inside_the_roots_must_really_be_sqlite(serve: ServeFactory) -> None:
    async with serve() as server:
        url = "sqlite:///docs/handbook.md"
        response = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert response.status_code == 400
        assert "no SQLite database file" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@metadata.invalid/test",
        "mysql://root@db.gpuguard.invalid:3306/test",
        "postgresql://postgres@127.0.0.2:5432/test",
        "mysql://root@127.1.2.3:3306/test",
    ],
)
async def test_hosts_off_the_allow_list_are_refused_before_any_traffic(
    serve: ServeFactory, url: str
) -> None:
    # The allow-list names 127.0.0.1 only: 127.0.0.2 stands for any other address.
    async with serve(GPUGUARD_SOURCES__DATABASE_HOSTS='["127.0.0.1"]') as server:
        response = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert response.status_code == 400
        assert "is not allowed" in response.json()["error"]["message"]
        assert (await server.http.get("/admin/jobs")).json()["jobs"] == []


async def test_closed_and_silent_ports_fail_with_the_same_words(serve: ServeFactory) -> None:
    from ._listeners import stalling_server

    timeouts = {
        "GPUGUARD_SOURCES__CONNECT_TIMEOUT_S": "1",
        "GPUGUARD_SOURCES__REFRESH_TIMEOUT_S": "20",
    }
    async with serve(**timeouts) as server, stalling_server() as silent:
        errors = []
        for port in (closed_port(), silent.port):
            url = f"postgresql://postgres@127.0.0.1:{port}/test"
            started = await server.http.post(
                "/admin/jobs/schema-refresh", json={"database_url": url}
            )
            assert started.status_code == 202
            job = await server.finished_job(started.json())
            assert job["status"] == "failed"
            errors.append(job["error"].replace(str(port), "PORT"))
        assert (
            errors[0]
            == errors[1]
            == (
                "SourceUnavailable: could not connect to the database source "
                "postgresql://127.0.0.1:PORT/test"
            )
        )


# --- 4. a password in the URL's query ----------------------------------------------------------


async def test_a_password_in_the_query_is_masked_in_job_list_and_events(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpuguard")
    secret = "hunter2-in-the-query"
    async with serve() as server:
        url = f"postgresql://postgres:{secret}@127.0.0.1:5432/no_such_db?password={secret}"
        started = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert started.status_code == 202
        job = await server.finished_job(started.json())
        assert job["status"] == "failed"
        listing = (await server.http.get("/admin/jobs")).text
        events = await server.job_events()
        assert any(event["status"] == "failed" for event in events)
        for shown in (str(job), listing, str(events), caplog.text, started.text):
            assert secret not in shown

        refused = await server.http.post(
            "/admin/jobs/schema-refresh",
            json={"database_url": f"postgresql://postgres@127.0.0.1/test?sslpassword={secret}"},
        )
        assert refused.status_code == 400
        assert secret not in refused.text


# --- 5. DNS rebinding and cross-origin requests -----------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8765",
        "127.0.0.1.nip.io",
        "",
        # Not an authority at all: a name after the bracket, a bare v6 address, odd ports.
        "[::1].evil.invalid",
        "[::1]evil.invalid:8765",
        "[::1]:8765x",
        "::1",
    ],
)
async def test_requests_for_another_host_name_are_refused(serve: ServeFactory, host: str) -> None:
    async with serve() as server:
        response = await server.http.get("/v1/models", headers={"Host": host})
        assert response.status_code == 421
        assert response.json()["error"]["code"] == "unknown_host"


async def test_the_ollama_port_answers_to_the_same_names_only(serve: ServeFactory) -> None:
    async with (
        serve() as server,
        running_server(ollama_app(server.app)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as ollama,
    ):
        assert (await ollama.get("/")).status_code == 200
        refused = await ollama.get("/api/tags", headers={"Host": "evil.example:11434"})
        assert refused.status_code == 421


async def test_the_server_answers_to_its_loopback_names(serve: ServeFactory) -> None:
    async with serve() as server:
        port = server.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            response = await server.http.get("/v1/models", headers={"Host": host})
            assert response.status_code == 200, host


async def test_configured_names_are_answered_too(serve: ServeFactory) -> None:
    async with serve(GPUGUARD_SERVER__ALLOWED_HOSTS='["gpu.lan"]') as server:
        response = await server.http.get("/v1/models", headers={"Host": "gpu.lan:8765"})
        assert response.status_code == 200


async def test_cross_origin_state_changes_are_refused_same_origin_ones_work(
    serve: ServeFactory,
) -> None:
    async with serve() as server:
        body = {"path": "docs"}
        foreign = await server.http.post(
            "/admin/jobs/rag", json=body, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
        assert foreign.json()["error"]["code"] == "cross_origin"
        null = await server.http.post("/admin/jobs/rag", json=body, headers={"Origin": "null"})
        assert null.status_code == 403
        same = await server.http.post("/admin/jobs/rag", json=body, headers={"Origin": server.url})
        assert same.status_code == 202
        await server.finished_job(same.json())
        reading = await server.http.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert reading.status_code == 200  # the browser keeps it from the page: no CORS


# --- 6. log forging ---------------------------------------------------------------------------


async def test_a_model_name_cannot_forge_a_log_line(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpuguard")
    forged = "x\n hung: op=chat model=fake-llm held=999s"
    async with serve() as server:
        for path in ("/admin/models/load", "/admin/models/unload"):
            await server.http.post(path, json={"model": forged})
        await server.http.post(
            "/v1/chat/completions",
            json={"model": forged, "messages": [{"role": "user", "content": "hi"}]},
        )
    mentioned = [
        r for r in caplog.records if "hung: op=chat model=fake-llm held=999s" in r.getMessage()
    ]
    assert mentioned, "the forged name should reach the log, escaped"
    for record in caplog.records:
        assert "\n" not in record.getMessage()
    assert "\n hung:" not in caplog.text
    assert "x\\n hung: op=chat" in caplog.text


# --- 8. document bombs and FIFOs --------------------------------------------------------------


async def test_a_fifo_does_not_block_its_job(serve: ServeFactory) -> None:
    folder = Path("pipes")
    async with serve() as server:
        (server.root / folder).mkdir()
        (server.root / folder / "notes.md").write_text("Notes next to a pipe.")
        fifo = server.root / folder / "fifo.txt"
        os.mkfifo(fifo)
        try:
            started = await server.http.post("/admin/jobs/rag", json={"path": str(folder)})
            assert started.status_code == 202
            job = await server.finished_job(started.json(), timeout_s=20)
        finally:
            _release(fifo)
        assert job["status"] == "completed"
        skipped = {issue["source"]: issue["message"] for issue in job["result"]["errors"]}
        assert "not a regular file" in skipped[str(fifo)]
        direct = await server.http.post("/admin/jobs/rag", json={"path": str(fifo)})
        job = await server.finished_job(direct.json(), timeout_s=20)
        assert "not a regular file" in job["result"]["errors"][0]["message"]


def _release(fifo: Path) -> None:
    """Let a reader stuck on the FIFO (old code) go, so that a failing test still ends."""
    with contextlib.suppress(OSError):  # nobody is reading it: nothing to release
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_docx_zip_bomb_yields_only_the_bounded_text(serve: ServeFactory) -> None:
    limit = 50_000
    async with serve(GPUGUARD_SOURCES__MAX_CHARS_PER_FILE=str(limit)) as server:
        (server.root / "bombs").mkdir()
        bomb = server.root / "bombs" / "bomb.docx"
        write_docx_bomb(bomb, paragraphs=20_000)  # ~20 MB of text in a small file
        assert bomb.stat().st_size < 200_000
        started = await server.http.post("/admin/jobs/rag", json={"path": "bombs"})
        job = await server.finished_job(started.json())
        assert job["status"] == "completed"
        result = job["result"]
        assert result["embedded"] == 1
        assert result["texts"] <= limit // 800 + 1  # 1,000-character chunks, 200 overlap
        assert f"only the first {limit} characters" in result["errors"][0]["message"]
