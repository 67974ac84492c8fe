"""The admin token on disk: ``gpuguard serve`` leaves it for its own user's CLI, nobody else's.

A real ``gpuguard serve`` in a child process; a second local user is the ``nobody`` account
(the tests run as root in CI), reading with its own uid.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuguard._server_file import (
    ServerFileError,
    read_server_token,
    server_file_dir,
    write_server_file,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This user's runtime directory, as a login session has it (0700)."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


@pytest.fixture
def served(tmp_path: Path, runtime: Path) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    """``gpuguard serve`` in a child: its URL, the one-time link it printed, the process."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "XDG_RUNTIME_DIR": str(runtime),
        "GPUGUARD_LLM__BACKEND": "fake",
        "GPUGUARD_EMBEDDINGS__GPU_ENGINE": "hash",
        "GPUGUARD_EMBEDDINGS__CPU_ENGINE": "hash",
        "GPUGUARD_DATA_DIR": str(tmp_path / "state"),
        "GPUGUARD_GUARD__LOCK_DIR": str(tmp_path / "locks"),
        "COLUMNS": "400",
    }
    env.pop("GPUGUARD_SERVER__TOKEN", None)
    command = [sys.executable, "-c", "from gpuguard.cli import main; main()", "serve"]
    child = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        link = ""
        for line in child.stdout:  # bounded by the child: it prints or exits
            if "Open the page" in line:
                link = line.split()[-1]
                break
        assert link, "serve printed no link"
        url = f"http://127.0.0.1:{port}"
        file = runtime / "gpuguard-server" / f"server-{port}.json"
        with httpx.Client(base_url=url, timeout=5) as http:
            for _ in range(600):  # until it answers and left its file: bounded in attempts
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/health").status_code == 200 and file.exists():
                        break
                assert child.poll() is None, "serve exited"
            else:
                pytest.fail("serve never answered")
        yield url, link, child
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)


def test_serve_leaves_its_token_for_this_users_cli_only(
    served: tuple[str, str, subprocess.Popen[str]], runtime: Path
) -> None:
    url, link, _ = served
    port = int(url.rsplit(":", 1)[1])
    file = server_file_dir() / f"server-{port}.json"
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    token = json.loads(file.read_text())["token"]
    assert read_server_token(url) == token
    # The CLI finds it by itself: no --token, no environment variable.
    env = {**os.environ, "PYTHONPATH": str(SRC), "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("GPUGUARD_SERVER__TOKEN", None)
    status = subprocess.run(
        [sys.executable, "-c", "from gpuguard.cli import main; main()", "status", "--url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    # The printed link gives the page the same token, once.
    code = link.partition("#login=")[2]
    with httpx.Client(base_url=url, timeout=5) as http:
        assert http.post("/auth/session", json={"code": code}).json()["token"] == token
        assert http.post("/auth/session", json={"code": code}).status_code == 401
        assert http.get("/admin/logs").status_code == 401


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second local user")
def test_another_local_user_cannot_read_the_token(
    served: tuple[str, str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    url, _, _ = served
    file = server_file_dir() / f"server-{url.rsplit(':', 1)[1]}.json"
    control = file.parent / "control.txt"
    control.write_text("readable")
    control.chmod(0o644)
    nobody = pwd.getpwnam("nobody").pw_uid
    # Open every folder on the way for passing through, so only the file's own mode decides.
    chain = [
        folder for folder in file.parents if tmp_path.parent.parent in (folder, *folder.parents)
    ]
    modes = {folder: stat.S_IMODE(folder.stat().st_mode) for folder in chain}
    try:
        for folder in chain:
            folder.chmod(0o711)

        def cat(path: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["cat", str(path)], user=nobody, capture_output=True, text=True, timeout=30
            )

        assert cat(control).stdout == "readable"  # the way is open to the other user
        peek = cat(file)
        assert peek.returncode != 0
        assert "Permission denied" in peek.stderr
        assert peek.stdout == ""
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)


def test_the_file_is_removed_when_serve_ends(
    served: tuple[str, str, subprocess.Popen[str]],
) -> None:
    url, _, child = served
    file = server_file_dir() / f"server-{url.rsplit(':', 1)[1]}.json"
    assert file.exists()
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    assert not file.exists()
    assert read_server_token(url) is None


# --- what the CLI trusts ------------------------------------------------------------------


def test_a_planted_link_for_the_folder_is_refused(runtime: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir(mode=0o700)
    (runtime / "gpuguard-server").symlink_to(elsewhere)
    with pytest.raises(ServerFileError, match="not a link"):
        write_server_file(8765, "http://127.0.0.1:8765", "secret-token")
    assert list(elsewhere.iterdir()) == []


def test_a_folder_others_may_enter_is_refused(runtime: Path) -> None:
    (runtime / "gpuguard-server").mkdir(mode=0o755)
    (runtime / "gpuguard-server").chmod(0o755)
    with pytest.raises(ServerFileError, match="this user alone"):
        write_server_file(8765, "http://127.0.0.1:8765", "secret-token")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_file_of_another_user_is_not_trusted(runtime: Path) -> None:
    path = write_server_file(8765, "http://127.0.0.1:8765", "planted-token")
    assert read_server_token("http://127.0.0.1:8765") == "planted-token"
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    assert read_server_token("http://127.0.0.1:8765") is None


def test_a_planted_link_for_the_file_is_not_followed(runtime: Path, tmp_path: Path) -> None:
    write_server_file(8765, "http://127.0.0.1:8765", "real-token")
    target = tmp_path / "planted.json"
    target.write_text(json.dumps({"token": "planted", "pid": os.getpid()}))
    target.chmod(0o600)
    file = server_file_dir() / "server-8765.json"
    file.unlink()
    file.symlink_to(target)
    assert read_server_token("http://127.0.0.1:8765") is None


@pytest.mark.parametrize(
    "url",
    [
        "http://gpu.lan:8765",
        "http://10.0.0.1:8765",
        "http://127.0.0.1.nip.io:8765",
        # Another address of this machine, where another user may listen on the same port.
        "http://localhost:8765",
        "http://[::1]:8765",
        "http://127.0.0.1:8766",
    ],
)
def test_the_token_goes_only_where_the_server_listens(runtime: Path, url: str) -> None:
    write_server_file(8765, "http://127.0.0.1:8765", "local-token")
    assert read_server_token("http://127.0.0.1:8765") == "local-token"
    assert read_server_token(url) is None


def test_a_dead_servers_file_is_not_used(runtime: Path) -> None:
    path = write_server_file(8765, "http://127.0.0.1:8765", "old-token")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({**entry, "pid": int(dead.stdout)}))
    assert read_server_token("http://127.0.0.1:8765") is None
