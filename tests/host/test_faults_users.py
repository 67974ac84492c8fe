"""Two Unix users share one lease through a group's directory; a third is kept out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuguard import GpuGuard

from .conftest import Processes, finish, line

GROUP, MEMBER, OUTSIDER = "gpuguard-lock", "gpuguard-member", "gpuguard-outsider"


def _ensure_users() -> None:
    if subprocess.run(["getent", "group", GROUP], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", GROUP], check=True)
    for user, groups in ((MEMBER, [GROUP]), (OUTSIDER, [])):
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            extra = ["-G", ",".join(groups)] if groups else []
            subprocess.run(
                ["useradd", "-M", "-N", "-g", "nogroup", *extra, "-s", "/usr/sbin/nologin", user],
                check=True,
            )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """``2770 root:gpuguard-lock``, as an operator's tmpfiles.d line makes it."""
    if os.getuid() != 0:
        pytest.skip("creates Unix users: needs root (as in CI)")  # pragma: no cover
    _ensure_users()
    base = Path(tempfile.mkdtemp(prefix="gpuguard-users-"))
    base.chmod(0o755)
    locks = base / "locks"
    locks.mkdir()
    shutil.chown(locks, "root", GROUP)
    locks.chmod(0o2770)
    try:
        yield locks
    finally:
        shutil.rmtree(base)


async def test_members_of_the_lock_group_share_one_lease_both_ways(
    shared_dir: Path, processes: Processes
) -> None:
    member = await processes.start(
        sys.executable, "-m", "tests.host._as_user", MEMBER, "hold", str(shared_dir), "train", "600"
    )
    assert await line(member) == "held"
    guard = GpuGuard.host(lock_dir=shared_dir, wait_timeout=None)
    current = guard.current
    assert current is not None
    assert (current.operation, current.pid) == ("train", member.pid)

    request = guard.hold("root-chat")
    assert await request.reserve()
    assert await finish(member) == 0
    async with request:  # granted by the member's release, across users
        waiter = await processes.start(
            sys.executable, "-m", "tests.host._as_user", MEMBER, "wait", str(shared_dir), "next"
        )
        assert await line(waiter) == "queued"
        entries = list((shared_dir / "gpu0" / "entries").iterdir())
        assert {entry.stat().st_gid for entry in entries} == {os.stat(shared_dir).st_gid}
        assert {entry.stat().st_mode & 0o777 for entry in entries} == {0o660}
    assert await line(waiter) == "granted"  # the member watched root's entry and was told
    assert await finish(waiter) == 0


async def test_a_user_outside_the_lock_group_is_told_how_to_get_in(
    shared_dir: Path, processes: Processes
) -> None:
    outsider = await processes.start(
        sys.executable, "-m", "tests.host._as_user", OUTSIDER, "hold", str(shared_dir), "x", "1"
    )
    await outsider.wait()
    assert outsider.stderr is not None
    error = (await outsider.stderr.read()).decode()
    assert "ConfigError" in error
    assert "guard.lock_group" in error
    assert not (shared_dir / "gpu0").exists()  # it made nothing there
