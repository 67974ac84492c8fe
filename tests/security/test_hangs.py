"""Databases that stop answering or answer nonsense: every schema refresh ends, in bounded time.

The "databases" are listeners of the test's own on 127.0.0.1: one that accepts and never
says a word, one that sends a MySQL greeting and then stalls, one that sends a broken one.
"""

from __future__ import annotations

import asyncio

from ._listeners import mysql_greeting, stalling_server
from .conftest import ServeFactory

QUICK = {
    "GPUGUARD_SOURCES__CONNECT_TIMEOUT_S": "1",
    "GPUGUARD_SOURCES__STATEMENT_TIMEOUT_S": "1",
    "GPUGUARD_SOURCES__REFRESH_TIMEOUT_S": "30",
}
PATIENT = {
    "GPUGUARD_SOURCES__CONNECT_TIMEOUT_S": "300",
    "GPUGUARD_SOURCES__STATEMENT_TIMEOUT_S": "300",
    "GPUGUARD_SOURCES__REFRESH_TIMEOUT_S": "600",
}


async def test_a_database_that_never_speaks_fails_in_bounded_time(serve: ServeFactory) -> None:
    async with serve(**QUICK) as server, stalling_server() as silent:
        url = f"postgresql://postgres@127.0.0.1:{silent.port}/test"
        started = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        job = await server.finished_job(started.json(), timeout_s=20)
        assert job["status"] == "failed"
        assert job["error"] == (
            "SourceUnavailable: could not connect to the database source "
            f"postgresql://127.0.0.1:{silent.port}/test"
        )


async def test_a_mysql_handshake_that_stalls_fails_in_bounded_time(serve: ServeFactory) -> None:
    async with serve(**QUICK) as server, stalling_server(mysql_greeting()) as stalled:
        url = f"mysql+pymysql://root@127.0.0.1:{stalled.port}/test"
        started = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        job = await server.finished_job(started.json(), timeout_s=20)
        assert job["status"] == "failed"
        assert "could not connect to the database source" in job["error"]


async def test_the_time_limit_stops_a_stalled_refresh_and_its_connection(
    serve: ServeFactory,
) -> None:
    limits = PATIENT | {"GPUGUARD_SOURCES__REFRESH_TIMEOUT_S": "2"}
    async with serve(**limits) as server, stalling_server(mysql_greeting()) as stalled:
        url = f"mysql+pymysql://root@127.0.0.1:{stalled.port}/test"
        started = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        job = await server.finished_job(started.json(), timeout_s=20)
        assert job["status"] == "failed"
        assert "took longer than 2s; stopped" in job["error"]
        async with asyncio.timeout(10):
            await stalled.closed.wait()  # the reader is gone, not left stuck


async def test_cancelling_a_stalled_refresh_really_stops_it(serve: ServeFactory) -> None:
    async with serve(**PATIENT) as server, stalling_server(mysql_greeting()) as stalled:
        url = f"mysql+pymysql://root@127.0.0.1:{stalled.port}/test"
        started = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        async with asyncio.timeout(20):
            await stalled.accepted.wait()
        cancelled = await server.http.post(f"/admin/jobs/{started.json()['id']}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        async with asyncio.timeout(10):
            await stalled.closed.wait()  # the connection was dropped: the work has stopped


async def test_a_malformed_server_reply_is_a_source_error_naming_the_source(
    serve: ServeFactory,
) -> None:
    broken = b"\x06\x00\x00\x00\x0a5.7\x00\x01"  # a greeting cut short
    async with serve(**QUICK) as server, stalling_server(broken) as nonsense:
        url = f"mysql+pymysql://root@127.0.0.1:{nonsense.port}/test"
        started = await server.http.post("/admin/jobs/schema-refresh", json={"database_url": url})
        job = await server.finished_job(started.json(), timeout_s=20)
        assert job["status"] == "failed"
        assert job["error"].startswith("SourceUnavailable: ")
        assert f"mysql://127.0.0.1:{nonsense.port}/test" in job["error"]
