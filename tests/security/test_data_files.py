"""The files the server writes are its owner's alone, whatever the umask.

Another local user must not read indexed text back out of the store: the data directory
is 0700, the store and SQLite's ``-wal``/``-shm`` beside it 0600.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gpuguard.index import Chunk, VectorStore

from .conftest import ServeFactory


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask a careless service could run with."""
    previous = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(previous)


def write_one(store: VectorStore) -> None:
    store.replace_source(
        "document",
        "/notes/private.md",
        content_hash="h",
        chunks=[Chunk("the private note", {})],
        vectors=np.ones((1, 4), dtype=np.float32),
    )


@pytest.mark.usefixtures("open_umask")
def test_the_store_and_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "index.db"
    store = VectorStore(path)
    try:
        write_one(store)
        files = [path, path.with_name("index.db-wal"), path.with_name("index.db-shm")]
        assert all(file.exists() for file in files)
        assert {file.name: mode(file) for file in files} == {file.name: 0o600 for file in files}
        assert mode(path.parent) == 0o700
    finally:
        store.close()


def test_a_store_left_readable_by_an_older_version_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    write_one(store := VectorStore(path))
    store.close()
    for file in (path, path.with_name("index.db-wal")):
        if file.exists():
            file.chmod(0o644)
    VectorStore(path).close()
    assert mode(path) == 0o600


def test_a_store_path_that_is_a_link_is_refused(tmp_path: Path) -> None:
    from gpuguard import StoreError

    target = tmp_path / "elsewhere.db"
    (tmp_path / "index.db").symlink_to(target)
    with pytest.raises(StoreError, match="cannot open the vector store"):
        VectorStore(tmp_path / "index.db")
    assert not target.exists()


@pytest.mark.usefixtures("open_umask")
async def test_the_servers_data_dir_and_index_are_owner_only(serve: ServeFactory) -> None:
    async with serve() as server:
        started = await server.http.post("/admin/jobs/rag", json={"path": "docs/handbook.md"})
        assert started.status_code == 202
        job = await server.finished_job(started.json())
        assert job["status"] == "completed"
    state = server.root.parent / "state"
    assert mode(state) == 0o700
    written = [path for path in state.rglob("*") if path.is_file()]
    assert any(path.name == "index.db" for path in written)
    assert {path.name: mode(path) & 0o077 for path in written} == dict.fromkeys(
        [path.name for path in written], 0
    )


@pytest.fixture
def traversable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder every local user may enter (as a home or /srv would be); removed after."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="gpuguard-local-users-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def as_another_user(*command: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` as the unprivileged ``nobody`` (the tests run as root in CI)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the local-user attacks need root to run a command as another user")
        pytest.skip("needs root to run a command as another user")
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *command], capture_output=True, check=False
    )


def test_another_local_user_cannot_read_the_index_back(traversable: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = traversable / "state" / "index.db"
        store = VectorStore(path)
        write_one(store)  # "the private note", as if from a 0600 file of the operator's
    finally:
        os.umask(previous)
    try:
        for target in (path, path.with_name("index.db-wal"), path.parent):
            attempt = as_another_user("cat" if target.is_file() else "ls", str(target))
            assert attempt.returncode != 0, target
            assert b"private note" not in attempt.stdout
            assert b"Permission denied" in attempt.stderr
    finally:
        store.close()
