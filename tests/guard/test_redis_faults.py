"""The Redis scope under faults, with real processes and a ledger written by each of them.

Process A holds the lease (TTL 3 s) and does 4 s of GPU work; process B waits for it. Then
the test's own Redis is stalled (``DEBUG SLEEP``, ``CLIENT PAUSE``), A's and B's connections
are killed (``CLIENT KILL``), Redis is restarted empty, or A blocks its own event loop. In
every case B starts only after A's work has ended (``CLOCK_MONOTONIC``, shared by every
process of the machine), and a lease that survived is not reported lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from gpuguard import GpuGuard, LeaseLost

from .redis_support import PrivateRedis, private_redis

ROOT = Path(__file__).resolve().parents[2]
HOLDERS_KEY = "gpuguard-test-procs:{gpu0}:holders"


def _worker(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen([sys.executable, "-m", "tests.guard._redis_worker", *args], env=env)


def _lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


def _wait_for(ledger: Path, word: str) -> None:
    """A bounded readiness poll of the subprocesses: until a line starts with ``word``."""
    for _ in range(400):
        if any(line.startswith(word) for line in _lines(ledger)):
            return
        time.sleep(0.025)
    raise AssertionError(f"no {word!r} in the ledger: {_lines(ledger)}")


def _at(ledger: Path, word: str) -> int:
    return next(int(line.split()[1]) for line in _lines(ledger) if line.startswith(word))


def _run_fault(tmp_path: Path, kind: str, fault: Callable[[PrivateRedis], None]) -> list[str]:
    """Run A (work ``kind``) and B against a private Redis, apply ``fault``, check the ledger."""
    a_ledger, b_ledger = tmp_path / "a", tmp_path / "b"
    with private_redis(tmp_path) as server:
        a = _worker(server.url, "gpu0", str(a_ledger), "work", kind)
        b = None
        try:
            _wait_for(a_ledger, "working")
            b = _worker(server.url, "gpu0", str(b_ledger), "next")
            _wait_for(b_ledger, "queued")
            fault(server)
            assert a.wait(30) == 0
            assert b.wait(30) == 0
        finally:
            for proc in (a, b):
                if proc is not None:
                    proc.kill()
                    proc.wait(5)
    a_lines, b_lines = _lines(a_ledger), _lines(b_ledger)
    if any(line.startswith("granted") for line in b_lines):
        assert _at(b_ledger, "granted") >= _at(a_ledger, "work-end"), (
            f"B was granted while A's work ran: {a_lines} {b_lines}"
        )
    return a_lines


def _admin(server: PrivateRedis) -> redis.Redis[bytes]:
    return redis.Redis(port=server.port, socket_timeout=10)


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("debug-sleep", ("DEBUG", "SLEEP", "1")),
        ("client-pause", ("CLIENT", "PAUSE", "1000", "ALL")),
        ("client-kill", ("CLIENT", "KILL", "SKIPME", "yes")),
    ],
)
def test_a_stall_or_killed_connections_keep_a_grant_that_still_stands(
    tmp_path: Path, name: str, command: tuple[str, ...]
) -> None:
    def fault(server: PrivateRedis) -> None:
        admin = _admin(server)
        if command[0] == "CLIENT" and command[1] == "KILL":
            for client_type in ("normal", "pubsub"):
                admin.execute_command("CLIENT", "KILL", "TYPE", client_type, "SKIPME", "yes")
        else:
            admin.execute_command(*command)
        admin.close()

    a_lines = _run_fault(tmp_path, "thread", fault)
    assert "released" in a_lines, f"{name}: A lost a grant Redis still held: {a_lines}"


def test_a_blocked_event_loop_does_not_starve_the_heartbeat(tmp_path: Path) -> None:
    a_lines = _run_fault(tmp_path, "blocking", lambda server: None)
    assert "released" in a_lines, a_lines


def test_a_restart_that_lost_every_key_gives_no_second_holder(tmp_path: Path) -> None:
    seen: list[int] = []

    def restart(server: PrivateRedis) -> None:
        server.kill()
        server.start()
        admin = _admin(server)
        for _ in range(400):  # bounded: A's heartbeat re-asserts its grant
            seen.append(admin.hlen(HOLDERS_KEY))
            if seen[-1]:
                break
            time.sleep(0.01)
        # Anyone asking now waits for A: its grant stands again.
        guard = GpuGuard.redis(server.url, "gpu0", prefix="gpuguard-test-procs", ttl_s=3.0)

        async def after() -> None:
            try:
                lease = await guard.acquire("after", wait_timeout=20.0)
                (server.directory / "after").write_text(str(time.monotonic_ns()))
                lease.release()
            finally:
                await guard.aclose()

        asyncio.run(after())
        admin.close()

    a_lines = _run_fault(tmp_path, "thread", restart)
    assert seen[-1], "A's grant was not re-asserted after the restart"
    assert "released" in a_lines, a_lines
    after_ns = int((tmp_path / "after").read_text())
    assert after_ns >= _at(tmp_path / "a", "work-end")


async def test_a_holder_cut_off_from_redis_stops_its_work_before_reporting_the_loss(
    tmp_path: Path,
) -> None:
    # Redis is frozen (SIGSTOP): no renewal can land. The holder fences itself: its work is
    # asked to stop and has ended before LeaseLost reaches the holder.
    with private_redis(tmp_path) as server:
        guard = GpuGuard.redis(server.url, "gpu0", ttl_s=1.5)
        steps: list[str] = []
        working = asyncio.Event()

        async def gpu_work() -> None:
            working.set()
            try:
                await asyncio.Event().wait()
            finally:
                steps.append("work ended")

        def stop() -> None:
            steps.append("stop called")

        try:
            async with guard.hold("chat") as lease:
                holding = asyncio.create_task(lease.run(gpu_work(), stop=stop))
                await working.wait()
                assert server.process is not None
                server.process.send_signal(signal.SIGSTOP)
                try:
                    with pytest.raises(LeaseLost) as lost:
                        await asyncio.wait_for(holding, 10.0)
                    steps.append("lease lost")
                finally:
                    server.process.send_signal(signal.SIGCONT)
        except LeaseLost:
            pass
        finally:
            await guard.aclose()
        assert steps == ["stop called", "work ended", "lease lost"]
        assert "fenced before the TTL could lapse" in str(lost.value)
