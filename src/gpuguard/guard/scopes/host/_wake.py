"""Waking one process of the host lease: a datagram to the inbox its requests name.

A decision that grants a request of another process tells that process at once (and, under a
sharing policy, the process of the new head of the line, :mod:`._decisions`): one
datagram to the abstract Unix socket its requests name in the state
(``@gpuguard/wake/<random>``), sent before the decider lets the directory's lock go. The
kernel removes the name when the process dies; a datagram to an inbox that is gone or full
is dropped, never waited for (the grant is in the state already, and the waiter's watch of
the request ahead of it wakes it when that one ends). A datagram says only "look again":
anyone may send one, and all it costs is a decision.

Abstract names are per network namespace: a process in another one (a container with its own
network sharing the lock directory) is woken by its entry watch alone. Under ``exclusive``
that suffices (the request it watches is the one served before it); under a sharing policy
its grant beside a holder that stays waits until an entry it watches is let go.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import socket

__all__ = ["Inbox", "post"]

_ADDRESS = "\0gpuguard/wake/"
_DRAIN = 64  # datagrams read per wake-up at most (they say nothing but "look again")


class Inbox:
    """One process's inbox for one lease: bound on first use, closed on :meth:`close`."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self.name: str | None = None
        """What requests record as their ``wake`` (None until :meth:`open`)."""

    def open(self) -> str:
        """Bind the inbox if it is not yet; its name."""
        if self._socket is None or self.name is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            name = f"{os.getpid()}-{secrets.token_hex(8)}"
            sock.bind(_ADDRESS + name)
            sock.setblocking(False)
            self._socket, self.name = sock, name
        return self.name

    def wait(self, timeout_s: float | None) -> None:
        """Sleep until a datagram is there (or ``timeout_s`` passes); :meth:`drain` reads it."""
        sock = self._socket
        if sock is None:
            return
        poll = select.poll()  # no limit on descriptor numbers, unlike select()
        poll.register(sock, select.POLLIN)
        poll.poll(None if timeout_s is None else timeout_s * 1000)

    def drain(self) -> None:
        """Read what came (datagrams say nothing but "look again": the look about to be made).

        Called under the directory's lock: a decider posts before it lets the lock go, so
        every datagram about a decision this look sees is read here, and any left comes from
        a later one.
        """
        sock = self._socket
        if sock is None:
            return
        for _ in range(_DRAIN):
            try:
                sock.recv(16)
            except OSError:  # BlockingIOError: nothing more
                return

    def wake(self) -> None:
        """Wake this inbox's own watcher now (an entry it watches was let go)."""
        if self.name is not None:
            post(self.name)

    def close(self) -> None:
        """Let go of the inbox (its name goes with it)."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        self._socket, self.name = None, None


_SENDER: list[socket.socket] = []


def post(name: str) -> None:
    """Tell the inbox ``name`` to look again; never waits, never fails."""
    if not _SENDER:
        _SENDER.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC))
    with contextlib.suppress(OSError):  # gone (refused), full (would block): dropped
        _SENDER[0].sendto(b"!", socket.MSG_DONTWAIT, _ADDRESS + name)
