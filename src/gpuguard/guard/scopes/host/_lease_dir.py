"""One GPU's directory in the lock directory, used only through descriptors.

``<lock_dir>/<gpu>/`` holds ``state.0`` and ``state.1`` (the lease, :mod:`._slots`) and
``entries/<seq>``, one file per request, ``flock``-ed by its process for the request's whole
life (the kernel drops the lock when the process dies). The directory itself is the lock
every decision takes.

Crash-consistency by construction:

* the directory is built aside (with its state and ``entries``) and renamed into place, so a
  directory without ``state`` was damaged by someone, never half-made by us;
* the state is written whole into one of two slots by turns (:mod:`._slots`), so a full file
  system or a crash mid-write leaves the previous state, and an error;
* the directory, ``entries``, the slots and the lock directory are checked by inode before each
  decision: removed or replaced under a live lease, they are refused, never silently made anew.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import weakref
from pathlib import Path

from ...._exceptions import ConfigError
from ._files import LockRoot, make_dir, open_dir, open_lock_dir
from ._slots import SLOT_NAMES, StateSlots
from ._state import State, StateError

__all__ = ["LeaseDir"]

_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS
_ENTRIES = "entries"
_Ident = tuple[int, int]


class LeaseDir:
    """The opened directory of one GPU: its lock, its state and its request entries."""

    def __init__(self, root: LockRoot, name: str) -> None:
        self.root = root
        self.path = root.path / name
        self._name = name
        self._fds: list[int] = [root.fd]
        weakref.finalize(self, _close_all, self._fds)
        self.fd = self._keep(_open_gpu_dir(root, name))
        self.entries_fd = self._keep(open_dir(_ENTRIES, self.fd, what=f"{self.path}/entries"))
        slot_fds = tuple(self._keep(self._open_slot(name)) for name in SLOT_NAMES)
        self.slots = StateSlots((slot_fds[0], slot_fds[1]), str(self.path))
        self._checks: list[tuple[str | Path, int | None, _Ident]] = [
            (root.path, None, _ident(root.fd)),
            (name, root.fd, _ident(self.fd)),
            (_ENTRIES, self.fd, _ident(self.entries_fd)),
        ]
        self._checks += [
            (n, self.fd, _ident(fd)) for n, fd in zip(SLOT_NAMES, slot_fds, strict=True)
        ]
        self._peeks: dict[int, int] = {}
        """Open (unlocked) descriptors of other requests' entries, to test their liveness."""

    @staticmethod
    def open(path: Path, name: str, *, group: str | None) -> LeaseDir:
        """Open (creating if needed) the directory of GPU ``name`` in the lock directory."""
        return LeaseDir(open_lock_dir(path, group=group), name)

    def close(self) -> None:
        """Close every descriptor without unlocking (after a fork the locks are the parent's)."""
        _close_all([*self._fds, *self._peeks.values()])
        self._fds.clear()
        self._peeks.clear()

    # --- the lock and the in-place check ----------------------------------------------------

    def lock(self) -> None:
        """Take the directory's exclusive lock (every decision runs under it)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        """Let go of it."""
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def in_place(self) -> bool:
        """Whether :meth:`check_in_place` passes."""
        try:
            self.check_in_place()
        except StateError:
            return False
        return True

    def check_in_place(self) -> None:
        """:class:`StateError` if a directory of the lease was removed or replaced."""
        for path, parent, ident in self._checks:
            try:
                info = os.stat(path, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is None or (info.st_dev, info.st_ino) != ident:
                raise StateError(
                    f"the lock directory {self.path} (or its {str(path)!r}) was removed or "
                    "replaced "
                    "while this process used it (another process may now hold a second lease "
                    "there); refused. Remove it only when no process uses the GPU"
                )

    # --- the state ----------------------------------------------------------------------

    def read(self) -> State:
        """The state; :class:`StateError` if it is unreadable (:mod:`._slots`)."""
        return self.slots.read()

    def write(self, state: State) -> None:
        """Replace the state whole; :class:`StateError` (the old one kept) if it cannot be."""
        self.slots.write(state)

    # --- request entries ------------------------------------------------------------------

    def create_entry(self, seq: int, pid: int) -> int:
        """Create and lock the entry of request ``seq``; its descriptor."""
        name = _entry_name(seq)
        try:
            fd = self._create(name, os.O_RDWR, dir_fd=self.entries_fd)
        except FileExistsError:  # left by a process killed before it counted the ticket
            os.unlink(name, dir_fd=self.entries_fd)
            fd = self._create(name, os.O_RDWR, dir_fd=self.entries_fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):  # the pid only helps messages: a full disk is fine
            os.write(fd, f"{pid}\n".encode())
        return fd

    def open_entry(self, seq: int) -> int | None:
        """A new descriptor of entry ``seq`` (to wait on its lock), None if it is gone."""
        try:
            return os.open(_entry_name(seq), os.O_RDONLY | _FILE_FLAGS, dir_fd=self.entries_fd)
        except FileNotFoundError:
            return None

    def remove_entry(self, seq: int) -> None:
        """Unlink entry ``seq`` (and stop watching it)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_entry_name(seq), dir_fd=self.entries_fd)
        self.forget(seq)

    def forget(self, seq: int) -> None:
        """Close the liveness descriptor of ``seq``, if one is open."""
        fd = self._peeks.pop(seq, None)
        if fd is not None:
            os.close(fd)

    def alive(self, seq: int) -> bool:
        """Whether some process still locks entry ``seq`` (the kernel drops it on death).

        Its owner locks it exclusively; watchers take shared locks for a moment as the owner
        lets go. So the probe asks for a shared lock: only the owner's lock refuses it, and a
        watcher still holding its shared lock never makes a dead request look alive.

        The descriptor kept from an earlier probe is of the file the number named then: a
        state rebuilt with nobody alive numbers its requests anew, so the number may name
        another process's file now. A free lock is taken for death only once the name still
        leads to that file; else the file it names now is probed.
        """
        fd = self._peeks.get(seq)
        if fd is not None and not _locked(fd) and not self._names(seq, fd):
            self.forget(seq)  # an earlier request of this number: look at the one it is now
            fd = None
        if fd is None:
            fd = self.open_entry(seq)
            if fd is None:
                return False  # its owner was killed as it removed it
            self._peeks[seq] = fd
        return _locked(fd)  # dead if not: the lock taken here goes when the descriptor closes

    def _names(self, seq: int, fd: int) -> bool:
        """Whether entry ``seq``'s name still leads to the file ``fd`` is open on (or to none)."""
        try:
            now = os.stat(_entry_name(seq), dir_fd=self.entries_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True  # removed: the request it was is gone
        was = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (was.st_dev, was.st_ino)

    def entry_seqs(self) -> list[int]:
        """Every entry file's number (live, dead or orphaned)."""
        return sorted(int(name) for name in os.listdir(self.entries_fd) if name.isdigit())

    def entry_pid(self, seq: int) -> str:
        """The pid written in entry ``seq``, for messages ("?" if unknown)."""
        fd = self.open_entry(seq)
        if fd is None:
            return "?"
        try:
            return os.read(fd, 32).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)

    # --- helpers ------------------------------------------------------------------------

    def _create(self, name: str, access: int, *, dir_fd: int | None = None) -> int:
        flags = access | os.O_CREAT | os.O_EXCL | _FILE_FLAGS
        fd = os.open(name, flags, self.root.file_mode, dir_fd=self.fd if dir_fd is None else dir_fd)
        if self.root.gid is not None:
            os.fchmod(fd, self.root.file_mode)  # the umask may have taken the group's bits
        return fd

    def _open_slot(self, name: str) -> int:
        """A state slot, made empty if it is missing (removed: the first read rebuilds it)."""
        try:
            return os.open(name, os.O_RDWR | _FILE_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            fd = os.open(
                name, os.O_RDWR | os.O_CREAT | _FILE_FLAGS, self.root.file_mode, dir_fd=self.fd
            )
            if self.root.gid is not None:
                os.fchmod(fd, self.root.file_mode)
            return fd

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd


def _open_gpu_dir(root: LockRoot, name: str) -> int:
    """Open ``root/name``, building it aside and renaming it into place if it is missing."""
    what = f"GPU lock directory {root.path / name}"
    for _ in range(3):
        with contextlib.suppress(FileNotFoundError):
            fd = open_dir(name, root.fd, what=what)
            _check_gpu_dir(root, fd, what)
            return fd
        _build(root, name)
    raise StateError(f"{what} keeps disappearing while it is created")


def _build(root: LockRoot, name: str) -> None:
    """Make ``name`` whole (``entries``, a fresh ``state``) under a temporary name, then rename."""
    aside = f".{name}.new-{os.getpid()}-{secrets.token_hex(4)}"
    make_dir(aside, root.fd, root)
    fd = open_dir(aside, root.fd, what=f"{root.path / aside}")
    try:
        made = LeaseDirParts(root, fd)
        made.populate()
        try:
            os.rename(aside, name, src_dir_fd=root.fd, dst_dir_fd=root.fd)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            made.remove(aside)  # another process made it first: use theirs
    finally:
        os.close(fd)


class LeaseDirParts:
    """What a new GPU directory holds, made or unmade through its descriptor."""

    def __init__(self, root: LockRoot, fd: int) -> None:
        self._root, self._fd = root, fd

    def populate(self) -> None:
        """``entries/`` and the two state slots, empty (a fresh lease)."""
        make_dir(_ENTRIES, self._fd, self._root)
        for name in SLOT_NAMES:
            slot = os.open(name, _CREATE, self._root.file_mode, dir_fd=self._fd)
            if self._root.gid is not None:
                os.fchmod(slot, self._root.file_mode)
            os.close(slot)

    def remove(self, aside: str) -> None:
        """Undo :meth:`populate` and remove the directory ``aside`` itself."""
        for name in SLOT_NAMES:
            os.unlink(name, dir_fd=self._fd)
        os.rmdir(_ENTRIES, dir_fd=self._fd)
        os.rmdir(aside, dir_fd=self._root.fd)


def _check_gpu_dir(root: LockRoot, fd: int, what: str) -> None:
    info = os.fstat(fd)
    group_ok = root.gid is not None and info.st_gid == root.gid
    if info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and not group_ok):
        os.close(fd)
        raise ConfigError(f"{what} is writable by others (mode {stat.filemode(info.st_mode)})")
    if info.st_uid not in (0, os.getuid()) and not group_ok:
        os.close(fd)
        raise ConfigError(f"{what} belongs to another user (uid {info.st_uid}): remove it")


def _ident(fd: int) -> _Ident:
    info = os.fstat(fd)
    return (info.st_dev, info.st_ino)


def _entry_name(seq: int) -> str:
    return f"{seq:020d}"


def _locked(fd: int) -> bool:
    """Whether another descriptor holds an exclusive lock on ``fd``'s file (its owner's)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
