"""Owner-only files: the data directory, the vector store and SQLite's files beside it.

The store holds the text of every indexed document, so it must be as private as the most
private one: another local user must not read a 0600 note back out of a 0644 index. The
modes are set through the opened descriptors (``fchmod``), never by path, and whatever the
umask: a directory 0700, the store 0600. SQLite creates its ``-wal`` and ``-shm`` files
with the store's own mode; ones left by an older version are made 0600 too. Links are not
followed: a store path that is a symbolic link is refused. A directory or file of another
user is left as it is (the operator chose it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["SQLITE_SIDE_FILES", "private_directory", "private_file"]

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database, named by suffix."""

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def private_directory(path: Path) -> None:
    """Make ``path`` (and missing parents) exist; ``path`` itself owner-only when it is ours.

    Raises :class:`OSError` (``ELOOP``, ``ENOTDIR``) when ``path`` is a link or no folder.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | os.O_CLOEXEC)
    try:
        _restrict(descriptor, 0o700)
    finally:
        os.close(descriptor)


def private_file(path: Path, *, create: bool = True) -> None:
    """Make the file ``path`` owner-only (0600), creating it empty when ``create``.

    Raises :class:`OSError` when ``path`` is a symbolic link (``ELOOP``) or, without
    ``create``, does not exist; ``ValueError`` when it is not a regular file.
    """
    flags = os.O_RDWR | _NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    descriptor = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o600)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError(f"{path} is not a regular file")
        _restrict(descriptor, 0o600)
    finally:
        os.close(descriptor)


def _restrict(descriptor: int, mode: int) -> None:
    info = os.fstat(descriptor)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(descriptor, mode)
