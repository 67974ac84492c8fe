"""A machine-wide mark of "this GPU is held", independent of any lock directory.

The holder binds an abstract Unix socket named after the GPU (``@gpuguard/gpu/<name>``);
the kernel removes the name when the socket closes or the process dies, and no file system
operation (``rm -rf``, logind's clean-up, another ``lock_dir``) can touch it. A second
holder of the same GPU name through another lock directory (or through one that was removed
and made anew under a live holder) finds the name taken and learns the other holder's pid
and uid from the kernel (``SO_PEERCRED``).

That is reported loudly (a warning naming both), not refused: any local user may bind any
abstract name, so refusing would let every user block the GPU. Abstract names are per
network namespace: a container with its own network does not see the host's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct

from ._probe import process_state

__all__ = ["GpuMarker", "OtherHolder"]

logger = logging.getLogger("gpuguard.guard")

OtherHolder = tuple[int, int]
"""The pid and uid of the process that holds the mark (from the kernel)."""

_UCRED = struct.Struct("3i")
_GONE = frozenset("ZX")  # exiting: its socket closes in a moment
_TRIES = 3


class GpuMarker:
    """The mark of one GPU name, held by this process while one of its requests holds."""

    def __init__(self, gpu: str, where: str) -> None:
        self._address = f"\0gpuguard/gpu/{gpu}"
        self._gpu, self._where = gpu, where
        self._socket: socket.socket | None = None

    def take(self) -> OtherHolder | None:
        """Bind the mark; if another process holds it, warn and return who it is."""
        if self._socket is not None:
            return None
        other: OtherHolder | None = None
        for _ in range(_TRIES):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(self._address)
                sock.listen(1)
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    return None  # no abstract names here: nothing to tell
                other = self._holder()
                if other is not None and process_state(other[0]) in _GONE:
                    continue  # a holder that is exiting (killed): its mark goes with it
                break
            self._socket = sock
            return None
        if other is not None:
            logger.warning(
                "second lease on GPU %s: this process (through %s) was granted it while "
                "pid %d (uid %d) holds it through another lease (another lock directory, or "
                "one removed and made anew); both may use the GPU at once. Make every "
                "process use the same lock directory",
                self._gpu,
                self._where,
                other[0],
                other[1],
            )
        return other

    def drop(self) -> None:
        """Let go of the mark (this process no longer holds)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _holder(self) -> OtherHolder | None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(self._address)
            pid, uid, _ = _UCRED.unpack(
                probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
        except OSError:
            return None  # closed meanwhile, or its backlog is full
        finally:
            with contextlib.suppress(OSError):
                probe.close()
        return (pid, uid)
