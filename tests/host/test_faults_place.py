"""Where processes meet, and what a local user can plant there: links, others' directories."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuguard import ConfigError, GpuGuard

from .conftest import Processes, finish, line

SYSTEM_LOCK_DIR = Path("/run/gpuguard")


@pytest.fixture
def gpu_name() -> Iterator[str]:
    """A GPU name of this test's own in the machine's lock directory, removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    for folder in (SYSTEM_LOCK_DIR / name / "entries", SYSTEM_LOCK_DIR / name):
        for leftover in folder.glob("*") if folder.is_dir() else []:
            if leftover.is_file():
                leftover.unlink()
        if folder.is_dir():
            folder.rmdir()


async def test_a_service_and_a_login_shell_meet_on_one_gpu(
    processes: Processes, gpu_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Different environments (XDG_RUNTIME_DIR set or not, no lock_dir): one lease."""
    script = (
        "import asyncio, sys\n"
        "from gpuguard import GpuGuard\n"
        "async def main():\n"
        f"    async with GpuGuard.host({gpu_name!r}).hold('shell'):\n"
        "        print('held', flush=True)\n"
        "        await asyncio.to_thread(sys.stdin.read)\n"
        "asyncio.run(main())\n"
    )
    shell = await processes.start(sys.executable, "-c", script, XDG_RUNTIME_DIR=str(tmp_path))
    assert await line(shell) == "held"
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    current = GpuGuard.host(gpu_name).current  # a service: no XDG_RUNTIME_DIR
    assert current is not None
    assert (current.operation, current.pid) == ("shell", shell.pid)
    assert await finish(shell) == 0


def test_a_link_planted_as_the_lock_directory_is_refused(tmp_path: Path) -> None:
    """Nothing is written through a link (fs.protected_symlinks=0 does not matter)."""
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "locks").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        GpuGuard.host(lock_dir=tmp_path / "locks")
    assert list(target.iterdir()) == []


def test_a_link_planted_as_a_gpu_directory_is_refused(tmp_path: Path) -> None:
    lock_dir, target = tmp_path / "locks", tmp_path / "elsewhere"
    lock_dir.mkdir(mode=0o700)
    target.mkdir(mode=0o700)
    (lock_dir / "gpu0").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        GpuGuard.host(lock_dir=lock_dir)
    assert list(target.iterdir()) == []


def test_a_directory_planted_by_another_user_names_the_fix(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory away")  # pragma: no cover
    planted = tmp_path / "gpuguard-0"
    planted.mkdir(mode=0o700)
    os.chown(planted, 12345, 12345)
    with pytest.raises(ConfigError, match=r"uid 12345.*set guard.lock_dir.*/run/gpuguard"):
        GpuGuard.host(lock_dir=planted)


def test_a_group_shared_lock_directory_is_used_by_its_members(tmp_path: Path) -> None:
    """The operator's ``2770 root:<group>`` (systemd-tmpfiles): the group is named by it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 0, 12345)
    shared.chmod(0o2770)
    guard = GpuGuard.host(lock_dir=shared)
    assert (shared / "gpu0").stat().st_gid == 12345
    assert (shared / "gpu0").stat().st_mode & 0o7777 == 0o2770
    assert guard.current is None
