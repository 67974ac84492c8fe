"""Where the host-wide lease lives, and who may use it: the lock directory, opened safely.

One directory per machine (``/run/gpuguard``, like ``/run/lock``), so that a system service
and a user's shell, which see different environments, meet on the same GPU. It is shared
by the members of one group the operator names (the directory is ``2770 root:<group>``);
per-user directories are used only when asked (``lock_dir``) or when the machine has no
system-wide directory and this process may not create one.

Every step goes through descriptors: the directory is opened with ``O_NOFOLLOW |
O_DIRECTORY`` relative to its parent, and the opened descriptor is checked (owner, group,
mode), so a link or a directory planted by another user is refused before anything is
written through it.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ...._exceptions import ConfigError

__all__ = [
    "SYSTEM_LOCK_DIR",
    "LockRoot",
    "default_lock_dir",
    "open_dir",
    "open_lock_dir",
    "prepare_lock_dir",
]

SYSTEM_LOCK_DIR = Path("/run/gpuguard")
"""The machine's lock directory: every process that uses a GPU meets here by default."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OTHERS_WRITE = stat.S_IWOTH
_GROUP_WRITE = stat.S_IWGRP


@dataclass(frozen=True, slots=True)
class LockRoot:
    """An opened, checked lock directory: its descriptor and the group that shares it."""

    path: Path
    fd: int
    gid: int | None
    """The sharing group (files are made group-readable and -writable), or None: owner-only."""

    @property
    def dir_mode(self) -> int:
        """The mode of the directories made inside it."""
        return 0o2770 if self.gid is not None else 0o700

    @property
    def file_mode(self) -> int:
        """The mode of the files made inside it (others read entries to test liveness)."""
        return 0o660 if self.gid is not None else 0o600


def default_lock_dir() -> Path:
    """``/run/gpuguard`` where it exists or this process may create it; else per-user.

    The per-user fallback (``/dev/shm/gpuguard-<uid>``, else ``/tmp/gpuguard-<uid>``) is the
    same in every environment of one user; the host arbiter warns when it is used, since
    processes of other users (a system service) do not meet there.
    """
    if SYSTEM_LOCK_DIR.is_dir() or os.access(SYSTEM_LOCK_DIR.parent, os.W_OK | os.X_OK):
        return SYSTEM_LOCK_DIR
    return per_user_lock_dir()


def per_user_lock_dir() -> Path:
    """``/dev/shm/gpuguard-<uid>`` (tmpfs), else ``/tmp/gpuguard-<uid>``."""
    shared_memory = Path("/dev/shm")
    base = shared_memory if shared_memory.is_dir() else Path("/tmp")
    return base / f"gpuguard-{os.getuid()}"


def prepare_lock_dir(path: Path, *, group: str | None = None) -> Path:
    """Create ``path`` if needed and check it (see :func:`open_lock_dir`); return it."""
    os.close(open_lock_dir(path, group=group).fd)
    return path


def open_lock_dir(path: Path, *, group: str | None = None) -> LockRoot:
    """Open the lock directory ``path`` (created if missing) and check what was opened.

    Created ``2770`` with ``group`` (``0700`` without one). Refused (:class:`ConfigError`,
    naming the fix) when it is a link or not a directory, when another user owns it (unless
    it is shared with a group and this user's groups include it), or when others may write
    to it. A directory created by the operator ``2770 root:<group>`` names the group itself.
    """
    gid = _group_id(group)
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        created = _make_dir(path.name, parent, 0o2770 if gid is not None else 0o700)
        fd = open_dir(path.name, parent, what=f"GPU lock directory {path}")
    finally:
        os.close(parent)
    try:
        if created:
            _own(fd, gid)
        return LockRoot(path, fd, _check_root(path, os.fstat(fd), gid))
    except BaseException:
        os.close(fd)
        raise


def open_dir(name: str, parent: int, *, what: str) -> int:
    """Open the directory ``name`` in ``parent`` without following a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ConfigError(
                f"{what} is a symbolic link or not a directory: refused (a link planted there "
                "could send the lease's files elsewhere); remove it"
            ) from exc
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"{what} is not open to uid {os.getuid()}: the operator shares it with a "
                "group (guard.lock_group) this user belongs to, or set guard.lock_dir for a "
                "lease of this user's own"
            ) from exc
        raise


def make_dir(name: str, parent: int, root: LockRoot) -> bool:
    """Create the directory ``name`` in ``parent`` with the lock directory's mode and group."""
    if not _make_dir(name, parent, root.dir_mode):
        return False
    fd = open_dir(name, parent, what=f"{name!r} in {root.path}")
    try:
        _own(fd, root.gid)
    finally:
        os.close(fd)
    return True


def _make_dir(name: str, parent: int, mode: int) -> bool:
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        return False
    return True


def _own(fd: int, gid: int | None) -> None:
    """Give a directory made here its group and its exact mode (the umask took bits away)."""
    if gid is not None:
        with contextlib.suppress(PermissionError):  # a member creates it: the setgid bit did
            os.fchown(fd, -1, gid)
    os.fchmod(fd, 0o2770 if gid is not None else 0o700)


def _check_root(path: Path, info: os.stat_result, gid: int | None) -> int | None:
    """The sharing group of the opened lock directory, or refuse it."""
    uid = os.getuid()
    if info.st_mode & _OTHERS_WRITE:
        raise ConfigError(
            f"GPU lock directory {path} is writable by others (mode "
            f"{stat.filemode(info.st_mode)}); another user could take or break the lease: "
            f"use a directory shared by one group (chmod 2770, chgrp GROUP)"
        )
    shared = bool(info.st_mode & _GROUP_WRITE)
    if shared and gid is None and info.st_uid in (0, uid) and info.st_mode & stat.S_ISGID:
        gid = info.st_gid  # the operator's 2770 root:<group>: the group is named by it
    if shared and info.st_gid != gid:
        raise ConfigError(
            f"GPU lock directory {path} is writable by group {info.st_gid} (mode "
            f"{stat.filemode(info.st_mode)}), which is not the lock group; set "
            "guard.lock_group to that group, or chmod g-w it"
        )
    if info.st_uid not in (0, uid) and not (shared and info.st_gid in os.getgroups()):
        raise ConfigError(
            f"GPU lock directory {path} belongs to another user (uid {info.st_uid}), who could "
            f"take or break the lease: remove it (as root), or set guard.lock_dir to a "
            f"directory of your own, or have the operator create {SYSTEM_LOCK_DIR} "
            "(2770 root:<group>)"
        )
    return gid if shared else None


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise ConfigError(f"guard.lock_group {group!r} is not a group of this machine") from None
