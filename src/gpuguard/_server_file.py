"""Where a running server leaves its admin token for its own user's CLI (Jupyter's way).

``gpuguard serve`` writes ``server-<port>.json`` (``{"url", "port", "pid", "token"}``) into an
owner-only directory: ``$XDG_RUNTIME_DIR/gpuguard-server``, else
``$XDG_DATA_HOME/gpuguard/runtime`` (``~/.local/share/gpuguard/runtime``). The directory is
0700 and the file 0600, both opened without following links and checked through their
descriptors, so another local user can neither read the token nor plant a file or link
for the CLI to trust. The CLI reads the file of the port it talks to, only for the loopback
address the server was bound to, and only while the process that wrote it is alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "ServerFileError",
    "read_server_token",
    "remove_server_file",
    "server_file_dir",
    "write_server_file",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_MAX_FILE_BYTES = 4096


class ServerFileError(OSError):
    """The server file's directory is not this user's alone (or cannot be made)."""


def server_file_dir() -> Path:
    """The owner-only directory of this user's server files."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "gpuguard-server"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "gpuguard" / "runtime"


def write_server_file(port: int, url: str, token: str) -> Path:
    """Write (atomically, 0600) the token of the server on ``port``; returns the file's path."""
    directory = server_file_dir()
    body = json.dumps({"url": url, "port": port, "pid": os.getpid(), "token": token}).encode()
    name = _name(port)
    fd = _open_dir(directory, create=True)
    try:
        temporary = f".{name}.{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        file_fd = os.open(temporary, flags, 0o600, dir_fd=fd)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(file_fd, view) :]
            os.fsync(file_fd)
        finally:
            os.close(file_fd)
        os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    return directory / name


def remove_server_file(port: int) -> None:
    """Remove the file of the server on ``port`` if it is this process's own."""
    with contextlib.suppress(OSError, ValueError):
        fd = _open_dir(server_file_dir(), create=False)
        try:
            if _read(fd, _name(port)).get("pid") == os.getpid():
                os.unlink(_name(port), dir_fd=fd)
        finally:
            os.close(fd)


def read_server_token(url: str) -> str | None:
    """The admin token of this user's live server at ``url`` (a loopback URL), else ``None``."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if host not in _LOOPBACK:
        return None  # never hand this user's token to another machine
    try:
        fd = _open_dir(server_file_dir(), create=False)
    except OSError:
        return None
    try:
        entry = _read(fd, _name(port))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    token, pid, served = entry.get("token"), entry.get("pid"), entry.get("url")
    if not isinstance(token, str) or not isinstance(pid, int) or not _alive(pid):
        return None
    if not isinstance(served, str) or _host_of(served) != host:
        return None  # e.g. localhost may be ::1, where another user's server could listen
    return token


def _host_of(url: str) -> str | None:
    """The host a served URL is reached at (a wildcard bind: its loopback address)."""
    host = urlsplit(url).hostname
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host or "", host)


def _name(port: int) -> str:
    return f"server-{int(port)}.json"


def _open_dir(directory: Path, *, create: bool) -> int:
    """Open ``directory`` (made 0700 when ``create``) and check it is this user's alone."""
    if create:
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError as exc:
        raise ServerFileError(
            f"cannot open {directory} as a directory (not a link): {exc}"
        ) from exc
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.close(fd)
        raise ServerFileError(
            f"{directory} must belong to this user alone (owner uid {info.st_uid}, "
            f"mode {stat.filemode(info.st_mode)})"
        )
    return fd


def _read(dir_fd: int, name: str) -> dict[str, object]:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        private = info.st_uid == os.geteuid() and not info.st_mode & 0o077
        if not stat.S_ISREG(info.st_mode) or not private:
            raise ValueError(f"{name} is not this user's private file")
        entry = json.loads(os.read(fd, _MAX_FILE_BYTES))
    finally:
        os.close(fd)
    if not isinstance(entry, dict):
        raise ValueError(f"{name} is not a server file")
    return entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process took the pid: not our server
    return True
