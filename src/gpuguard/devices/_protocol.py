"""The devices seam: what the guard may ask about a GPU, and the facts it gets back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Devices", "GpuInfo", "GpuProcess"]


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process with memory on a GPU, as the driver lists it."""

    pid: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU at one instant: which it is and how its memory is used."""

    index: int
    name: str
    uuid: str
    total_bytes: int
    free_bytes: int
    processes: tuple[GpuProcess, ...] = ()

    @property
    def used_bytes(self) -> int:
        """Memory in use, by every program on the GPU."""
        return self.total_bytes - self.free_bytes

    def used_by(self, pids: set[int]) -> int:
        """Bytes the driver lists for the processes ``pids``."""
        return sum(p.used_bytes for p in self.processes if p.pid in pids)


class Devices(Protocol):
    """Reads GPU facts; every call may raise :class:`DevicesUnavailable`."""

    @property
    def source(self) -> str:
        """Where the facts come from (``nvml``, ``fake``), for logs and ``/metrics``."""

    def count(self) -> int:
        """How many GPUs there are."""

    def info(self, index: int) -> GpuInfo:
        """The facts of GPU ``index`` now."""
