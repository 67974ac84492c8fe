"""A :class:`~gpuguard.devices.Devices` set by hand: tests drive memory and processes."""

from __future__ import annotations

import dataclasses

from .._exceptions import DevicesUnavailable
from ._protocol import GpuInfo, GpuProcess

__all__ = ["FakeDevices"]


class FakeDevices:
    """GPUs whose facts a test sets; :meth:`fail` makes every read raise, like a lost driver."""

    source = "fake"

    def __init__(self, *gpus: GpuInfo) -> None:
        self._gpus = list(gpus)
        self._failure: str | None = None

    @classmethod
    def with_gpus(cls, *total_mib: int, name: str = "Fake GPU") -> FakeDevices:
        """GPUs with ``total_mib`` each, all free."""
        return cls(
            *(
                GpuInfo(i, name, f"GPU-fake-{i}", mib * 1024 * 1024, mib * 1024 * 1024)
                for i, mib in enumerate(total_mib)
            )
        )

    def count(self) -> int:
        """How many GPUs were set."""
        self._check()
        return len(self._gpus)

    def info(self, index: int) -> GpuInfo:
        """GPU ``index`` as last set."""
        self._check()
        try:
            return self._gpus[index]
        except IndexError:
            raise DevicesUnavailable(f"no GPU {index} (there are {len(self._gpus)})") from None

    def set_free(self, index: int, free_bytes: int) -> None:
        """Set GPU ``index``'s free memory."""
        self._gpus[index] = dataclasses.replace(self._gpus[index], free_bytes=free_bytes)

    def set_processes(self, index: int, *processes: GpuProcess) -> None:
        """Set the processes the driver lists on GPU ``index``."""
        self._gpus[index] = dataclasses.replace(self._gpus[index], processes=processes)

    def allocate(self, index: int, pid: int, delta_bytes: int) -> None:
        """Grow (or, negative, shrink) what process ``pid`` uses on GPU ``index``.

        Its listed memory and the GPU's free memory move together, as a real allocation's
        do; a process left with nothing is no longer listed.
        """
        gpu = self._gpus[index]
        listed = {p.pid: p.used_bytes for p in gpu.processes}
        used = listed.get(pid, 0) + delta_bytes
        if used < 0 or delta_bytes > gpu.free_bytes:
            raise ValueError(f"process {pid} cannot use {used} bytes on GPU {index}")
        listed[pid] = used
        processes = tuple(GpuProcess(p, b) for p, b in listed.items() if b > 0)
        self._gpus[index] = dataclasses.replace(
            gpu, processes=processes, free_bytes=gpu.free_bytes - delta_bytes
        )

    def fail(self, reason: str | None = "the driver stopped answering") -> None:
        """Make every read raise :class:`DevicesUnavailable` (``None``: answer again)."""
        self._failure = reason

    def _check(self) -> None:
        if self._failure is not None:
            raise DevicesUnavailable(self._failure)

    def __repr__(self) -> str:
        return f"<FakeDevices gpus={len(self._gpus)}>"
