"""What a descriptor really opened: checked against the roots after opening, not before.

A job checks its paths once, then reads each file later: between the two, a file (or a
folder on its path) may be swapped for a link to ``/etc/passwd``. Checking the path again
would race the same way; checking the opened descriptor cannot. On Linux the kernel names
the file a descriptor holds (``/proc/self/fd/N``); elsewhere the path is resolved after
opening and must lead to the very file opened (same device and inode).
"""

from __future__ import annotations

import os
from pathlib import Path

from .policy import SourcePolicy

__all__ = ["opened_path", "opened_refusal"]

_PROC_FD = Path("/proc/self/fd")


def opened_path(descriptor: int, path: Path) -> Path | None:
    """The real path of the file ``descriptor`` holds (opened as ``path``); ``None``: unknown.

    ``None`` when the kernel cannot say and ``path`` no longer leads to that file.
    """
    try:
        named = os.readlink(_PROC_FD / str(descriptor))
    except OSError:
        named = None
    if named is not None and named.startswith("/") and not named.endswith(" (deleted)"):
        return Path(named)
    try:
        resolved = path.resolve(strict=True)
        on_disk, held = os.stat(resolved), os.fstat(descriptor)
    except (OSError, RuntimeError):
        return None
    same = (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
    return resolved if same else None


def opened_refusal(descriptor: int, path: Path, policy: SourcePolicy) -> str | None:
    """Why the file ``descriptor`` holds may not be read under ``policy`` (``None``: it may)."""
    real = opened_path(descriptor, path)
    if real is None:
        return "changed while being opened; not read"
    return policy.refusal(real)
