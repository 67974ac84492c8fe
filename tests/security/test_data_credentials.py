"""Database credentials: never shown, never taken from the operator, never through the socket.

Every attack goes to a live server on 127.0.0.1: the real PostgreSQL on 5432, a closed
port, or a PostgreSQL double of the test's own that asks for a cleartext password.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from gpuguard._redact import mask_url, redact
from gpuguard.index import database_label

from ._fake_postgres import fake_postgres
from .conftest import ServeFactory
from .test_attacks import closed_port

SECRET = "CorrectHorse"

# What SQLAlchemy (so the driver) takes as the password, and how the URL is shown.
MASKED_URLS = [
    (
        f"postgresql://postgres:Tr0ub/4dor{SECRET}@127.0.0.1:5432/db",
        "postgresql://postgres:***@127.0.0.1:5432/db",
    ),
    (
        f"postgresql://postgres:Tr0ub?{SECRET}@127.0.0.1/db",
        "postgresql://postgres:***@127.0.0.1/db",
    ),
    (
        f"postgresql://postgres:Tr0ub#{SECRET}@127.0.0.1/db",
        "postgresql://postgres:***@127.0.0.1/db",
    ),
    (
        f"postgresql://postgres:Tr0ub@{SECRET}@127.0.0.1/db",
        "postgresql://postgres:***@127.0.0.1/db",
    ),
    (
        f"postgresql://postgres@127.0.0.1/db?password=pw,{SECRET}",
        "postgresql://postgres@127.0.0.1/db?password=***",
    ),
    (
        f"mysql://root@127.0.0.1/db?charset=utf8&pass%77ord={SECRET}&user=root",
        "mysql://root@127.0.0.1/db?charset=utf8&pass%77ord=***&user=root",
    ),
    (f"postgresql://postgres:a b {SECRET}@127.0.0.1/db", "postgresql://postgres:***@127.0.0.1/db"),
]


@pytest.mark.parametrize(("url", "shown"), MASKED_URLS)
def test_a_url_is_masked_as_the_driver_reads_it(url: str, shown: str) -> None:
    parsed = make_url(url)  # what the driver is given: the password is all of it
    assert SECRET in f"{parsed.password}{parsed.host}{dict(parsed.query)}"
    assert mask_url(url) == shown


@pytest.mark.parametrize(("url", "shown"), [pair for pair in MASKED_URLS if " " not in pair[0]])
def test_a_url_in_a_sentence_is_masked_alike(url: str, shown: str) -> None:
    assert redact(f"could not use {url} today") == f"could not use {shown} today"


async def test_passwords_never_reach_the_answer_the_list_the_events_or_the_logs(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpuguard")
    port = closed_port()
    async with serve(GPUGUARD_SOURCES__CONNECT_TIMEOUT_S="1") as server:
        for url, _shown in [MASKED_URLS[i] for i in (0, 1, 2, 4)]:
            url = url.replace("127.0.0.1:5432", "127.0.0.1").replace(
                "127.0.0.1", f"127.0.0.1:{port}"
            )
            started = await server.http.post(
                "/admin/jobs/schema-refresh", json={"database_url": url}
            )
            assert started.status_code == 202, started.text
            job = await server.finished_job(started.json())
            assert job["status"] == "failed"
            assert job["source"].startswith("postgresql://postgres")
            for shown in (started.text, str(job)):
                assert SECRET not in shown
                assert "Tr0ub" not in shown
        listing = (await server.http.get("/admin/jobs")).text
        logs = (await server.http.get("/admin/logs")).text
        events = str(await server.job_events())
        for shown in (listing, logs, events, caplog.text):
            assert SECRET not in shown
            assert "Tr0ub" not in shown


async def test_an_unencoded_at_sign_in_a_password_is_refused_without_echo(
    serve: ServeFactory,
) -> None:
    async with serve() as server:
        response = await server.http.post(
            "/admin/jobs/schema-refresh", json={"database_url": MASKED_URLS[3][0]}
        )
        assert response.status_code == 400
        assert "%40" in response.json()["error"]["message"]
        assert SECRET not in response.text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///test",
        "postgresql://:5432/test",
        "postgresql://@/test",
        "postgres://postgres@/test",
        "postgresql://postgres@:5432/test",
        "mysql://root@/test",
    ],
)
async def test_a_url_without_a_host_never_reaches_the_local_socket(
    serve: ServeFactory, url: str
) -> None:
    async with serve() as server:
        response = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert response.status_code == 400, response.text
        assert "names no host" in response.json()["error"]["message"]
        assert (await server.http.get("/admin/jobs")).json()["jobs"] == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1/test?host=/var/run/postgresql",
        "postgresql://postgres@127.0.0.1/test?hostaddr=127.0.0.1",
        "mysql://root@127.0.0.1/test?unix_socket=/run/mysqld/mysqld.sock",
    ],
)
async def test_a_socket_named_in_the_query_is_refused(serve: ServeFactory, url: str) -> None:
    async with serve() as server:
        response = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert response.status_code == 400
        assert "not allowed" in response.json()["error"]["message"]


def test_the_label_of_a_socket_url_says_so() -> None:
    assert database_label("postgresql:///payroll") == "postgresql://local-socket/payroll"
    assert database_label("postgresql://127.0.0.1/payroll") == "postgresql://127.0.0.1/payroll"


@pytest.fixture
def operator_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The operator's ambient PostgreSQL credentials: variable, password file, service."""
    home = tmp_path / "operator-home"
    home.mkdir()
    secrets = ["from-PGPASSWORD", "from-PGPASSFILE", "from-home-pgpass", "from-PGSERVICE"]
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{secrets[1]}\n")
    (home / ".pgpass").write_text(f"*:*:*:*:{secrets[2]}\n")
    services = tmp_path / "services.conf"
    services.write_text(f"[operator]\npassword={secrets[3]}\n")
    for path in (passfile, home / ".pgpass", services):
        path.chmod(0o600)
    monkeypatch.setenv("PGPASSWORD", secrets[0])
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGSERVICE", "operator")
    return secrets


async def test_the_operators_credentials_never_go_to_a_callers_server(
    serve: ServeFactory, operator_credentials: list[str]
) -> None:
    async with serve() as server, fake_postgres() as fake:
        url = f"postgresql://postgres@127.0.0.1:{fake.port}/test"
        started = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert started.status_code == 202
        job = await server.finished_job(started.json())
        assert job["status"] == "failed"
        assert fake.asked.is_set()  # it was asked for a password, and had none to give
        assert fake.passwords == []
        assert fake.startups[0]["user"] == "postgres"


async def test_the_callers_own_password_is_the_one_sent(
    serve: ServeFactory, operator_credentials: list[str]
) -> None:
    async with serve() as server, fake_postgres() as fake:
        for url in (
            f"postgresql://postgres:callers-own@127.0.0.1:{fake.port}/test",
            f"postgresql://postgres@127.0.0.1:{fake.port}/test?password=callers-query",
        ):
            started = await server.http.post(
                "/admin/jobs/schema-refresh", json={"database_url": url}
            )
            await server.finished_job(started.json())
        assert fake.passwords == ["callers-own", "callers-query"]


async def test_admin_logs_show_callers_the_jobs_words_not_the_drivers(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpuguard")
    async with serve(GPUGUARD_SOURCES__CONNECT_TIMEOUT_S="1") as server:
        urls = [
            f"postgresql://postgres@127.0.0.1:{closed_port()}/test",
            "postgresql://no_such_role_x@127.0.0.1:5432/test",
            "postgresql://postgres@127.0.0.1:5432/no_such_database_x",
        ]
        errors = []
        for url in urls:
            started = await server.http.post(
                "/admin/jobs/schema-refresh", json={"database_url": url}
            )
            job = await server.finished_job(started.json())
            errors.append(job["error"])
        logs = (await server.http.get("/admin/logs")).json()
        shown = str(logs)
        for words in ("refused", "does not exist", 'no_such_role_x" ', "timeout expired"):
            assert words not in shown
        for error in errors:
            assert error.removeprefix("SourceUnavailable: ") in shown
        # The operator still has the driver's words, in the server's own log.
        assert "does not exist" in caplog.text


@pytest.mark.parametrize(
    "url", ["mssql+pymssql://sa@127.0.0.1/db", "postgresql+psycopg2://postgres@127.0.0.1/db"]
)
async def test_a_driver_that_is_not_installed_is_refused_before_any_job(
    serve: ServeFactory, url: str
) -> None:
    async with serve() as server:
        response = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        assert response.status_code == 400
        assert "No module named" in response.json()["error"]["message"]
        assert (await server.http.get("/admin/jobs")).json()["jobs"] == []


@pytest.mark.parametrize(
    "url", ["mysql+mysqldb://root@localhost/test", "mariadb+pymysql://root@LOCALHOST/test"]
)
def test_mysql_localhost_means_tcp_for_a_caller(url: str) -> None:
    from gpuguard.index._connect import url_only_args

    assert url_only_args(make_url(url)) == {"host": "127.0.0.1", "port": 3306}


def test_libpq_is_given_nothing_to_look_up() -> None:
    from gpuguard.index._connect import url_only_args

    forced = url_only_args(make_url("postgresql+psycopg://postgres@localhost/test"))
    assert forced["passfile"] == os.devnull
    assert (forced["password"], forced["port"], forced["gssencmode"]) == ("", 5432, "disable")
    assert not Path(forced["sslcert"]).exists()
    given = url_only_args(make_url("postgresql+psycopg://postgres:pw@localhost:5433/test"))
    assert "password" not in given
    assert given["port"] == 5433
