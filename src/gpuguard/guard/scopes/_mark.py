"""A machine-wide mark of "this GPU is held", the same for every scope and lock directory.

The holder binds an abstract Unix socket named after the GPU (``@gpuguard/gpu/<name>``);
the kernel removes the name when the socket closes or the process dies, and no file system
operation (``rm -rf``, logind's clean-up, another ``lock_dir``) can touch it. Every scope
takes the same mark while this process holds: the host scope (any lock directory), the Redis
scope (any Redis, any prefix) and the process scope. Processes that share one lease never
hold at once under the exclusive policy, and co-holders of one host lease under a sharing
policy name each other (``peers``), so they never meet on the mark; a holder that finds it
taken by anyone else holds a second
lease on the same GPU name (host beside Redis, host beside process, two lock directories,
two process-scope programs) and learns the other holder's pid and uid from the kernel
(``SO_PEERCRED``).

A child made by ``fork()`` closes the marks it inherited (its parent holds, not it), so a
mark never outlives its holder's release in a child.

That is reported loudly (a warning naming both), not refused: any local user may bind any
abstract name, so refusing would let every user block the GPU. Abstract names are per
network namespace: a container with its own network does not see the host's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import weakref
from collections.abc import Container

from ._proc import process_name, process_state

__all__ = ["GpuMarker", "OtherHolder"]

logger = logging.getLogger("gpuguard.guard")

OtherHolder = tuple[int, int]
"""The pid and uid of the process that holds the mark (from the kernel); ``(0, -1)`` when
the kernel could not say (its backlog of unanswered probes is full)."""

UNKNOWN: OtherHolder = (0, -1)

_UCRED = struct.Struct("3i")
_GONE = frozenset("ZX")  # exiting: its socket closes in a moment
_TRIES = 3
_BACKLOG = 64
"""Probes the holder never accepts stay queued until it lets go; past this many, a probe
learns nothing more than "taken" (which is still reported)."""


class _Freed(Exception):
    """The mark's name was let go between the bind that failed and the probe."""


class GpuMarker:
    """The mark of one GPU name, held by this process while one of its requests holds.

    ``where`` says in the warning which lease this process holds through.
    """

    def __init__(self, gpu: str, where: str) -> None:
        self._address = f"\0gpuguard/gpu/{gpu}"
        self._gpu, self._where = gpu, where
        self._socket: socket.socket | None = None
        self.holding = False
        """True between :meth:`take` and :meth:`linger` or :meth:`drop`."""
        _MARKERS.add(self)

    def __del__(self) -> None:
        self.drop()

    @property
    def taken(self) -> bool:
        """True while this process bears the mark."""
        return self._socket is not None

    def take(self, peers: Container[int] = ()) -> OtherHolder | None:
        """Bind the mark; if another lease holds it, warn and return who holds it.

        ``peers`` are the pids that hold this very lease beside this process: one of them
        bearing the mark is no second lease.
        """
        self.holding = True
        if self._socket is not None:
            return None
        other = UNKNOWN
        for _ in range(_TRIES):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(self._address)
                sock.listen(_BACKLOG)
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    return None  # no abstract names here: nothing to tell
                mine = _BOUND.get(self._address)
                if mine is not None:  # another lease of this very process has it
                    if not mine.holding:
                        mine.drop()  # an idle, lingering mark gives way
                        continue
                    other = (os.getpid(), os.getuid())
                    break
                try:
                    other = self._holder()
                except _Freed:
                    continue
                if other != UNKNOWN and process_state(other[0]) in _GONE:
                    continue  # a holder that is exiting (killed): its mark goes with it
                if other[0] in peers:
                    return None  # a co-holder of this lease bears it
                break
            self._socket = sock
            _BOUND[self._address] = self
            return None
        self._warn(other)
        return other

    def linger(self) -> None:
        """No longer holding, but keep the mark bound until :meth:`drop`.

        For a lease no other process shares (the process scope): whoever meets its mark holds
        a second lease, holding or not, and a hold here then costs no system call.
        """
        self.holding = False

    def drop(self) -> None:
        """Let go of the mark (this process no longer holds through this lease)."""
        self.holding = False
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            if _BOUND.get(self._address) is self:
                del _BOUND[self._address]

    def _warn(self, other: OtherHolder) -> None:
        pid, uid = other
        who = (
            f"pid {pid} ({process_name(pid)}, uid {uid})"
            if other != UNKNOWN
            else "another process (pid unknown)"
        )
        logger.warning(
            "second lease on GPU %s: this process (through %s) was granted it while %s holds "
            "it through another lease (another scope, lock directory or Redis, or a lock "
            "directory removed and made anew); both may use the GPU at once. Make every "
            "process that uses this GPU share one lease",
            self._gpu,
            self._where,
            who,
        )

    def _holder(self) -> OtherHolder:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(self._address)
            pid, uid, _ = _UCRED.unpack(
                probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                raise _Freed from exc
            return UNKNOWN  # its backlog is full: taken, by whom the kernel will not say
        finally:
            with contextlib.suppress(OSError):
                probe.close()
        return (pid, uid)


_MARKERS: weakref.WeakSet[GpuMarker] = weakref.WeakSet()
_BOUND: weakref.WeakValueDictionary[str, GpuMarker] = weakref.WeakValueDictionary()
"""The marks this process has bound, by address: a lingering one gives way to another lease
of this process; a holding one is reported like any other."""


def _after_fork_in_child() -> None:
    for marker in list(_MARKERS):
        marker.drop()  # closes this process's copy only: the parent still holds its mark


os.register_at_fork(after_in_child=_after_fork_in_child)
