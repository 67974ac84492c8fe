"""The lease's state on disk: two slot files, written in place by turns.

Each write goes whole (one ``pwrite``, every byte checked) into the slot that does not hold
the current state, behind a header with a generation number, the length and a CRC-32 of the
payload; a read takes the valid slot of the highest generation. So a crash mid-write, a short
write or a full file system damages only the slot being written, and the previous state
stays current; nothing is renamed or truncated (ext4 flushes a file renamed over another,
which cost milliseconds per decision).
"""

from __future__ import annotations

import errno
import os
import zlib

from ._state import State, StateError

__all__ = ["SLOT_NAMES", "StateSlots"]

SLOT_NAMES = ("state.0", "state.1")
_MAGIC = b"gpuguard-state 1"
_READ_CHUNK = 1 << 16


class StateSlots:
    """The two open slot files of one GPU's directory."""

    def __init__(self, fds: tuple[int, int], where: str) -> None:
        self._fds = fds
        self._where = where
        self._current: int | None = None
        self._generation = 0

    def read(self) -> State:
        """The current state; :class:`StateError` if neither slot holds a whole one.

        Both slots' headers and CRCs are checked; only the newest whole payload is parsed
        (the other one, only if that one does not parse).
        """
        whole: list[tuple[int, int, bytes]] = []
        problems = []
        for index, fd in enumerate(self._fds):
            try:
                generation, payload = _unwrap(_pread_all(fd))
            except StateError as exc:
                problems.append(str(exc))
                continue
            whole.append((generation, index, payload))
        for generation, index, payload in sorted(whole, key=lambda w: (-w[0], w[1])):
            try:
                state = State.decode(payload)
            except StateError as exc:
                problems.append(str(exc))
                continue
            self._generation, self._current = generation, index
            return state
        raise StateError(" and ".join(sorted(set(problems))))

    def write(self, state: State) -> None:
        """Write ``state`` into the other slot; :class:`StateError` if it cannot be."""
        target = 0 if self._current != 0 else 1
        generation = self._generation + 1
        payload = state.encode()
        header = b"%s %d %d %d\n" % (_MAGIC, generation, len(payload), zlib.crc32(payload))
        data = memoryview(header + payload)
        offset = 0
        try:
            while offset < len(data):
                written = os.pwrite(self._fds[target], data[offset:], offset)
                if written <= 0:
                    raise OSError(errno.EIO, "no byte written")
                offset += written  # a short write: write the rest, or fail
        except OSError as exc:
            raise StateError(
                f"the lease state in {self._where} cannot be written ({exc.strerror}); "
                "nothing was granted"
            ) from exc
        self._current, self._generation = target, generation


def _pread_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    try:
        while chunk := os.pread(fd, _READ_CHUNK, offset):
            chunks.append(chunk)
            offset += len(chunk)
    except OSError as exc:
        raise StateError(f"unreadable ({exc.strerror})") from exc
    return b"".join(chunks)


def _unwrap(raw: bytes) -> tuple[int, bytes]:
    """A slot's generation and its payload, the CRC checked (not yet parsed)."""
    if not raw:
        raise StateError("empty")
    header, _, rest = raw.partition(b"\n")
    fields = header.split(b" ")
    if len(fields) != 5 or b" ".join(fields[:2]) != _MAGIC:
        raise StateError(f"unparsable ({len(raw)} bytes)")
    try:
        generation, length, crc = (int(field) for field in fields[2:])
    except ValueError:
        raise StateError(f"unparsable ({len(raw)} bytes)") from None
    payload = rest[:length]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise StateError(f"cut or damaged ({len(raw)} bytes)")
    return generation, payload
