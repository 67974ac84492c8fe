"""GPU facts from NVIDIA's management library (NVML), through ``nvidia-ml-py``.

NVML reports memory per GPU and per process, whichever program allocated it, so the guard
can respect memory used by programs that do not use gpuguard. The library is loaded lazily;
without it (or without a driver) :func:`detect_devices` returns ``None``.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

from .._exceptions import DevicesUnavailable
from ._protocol import GpuInfo, GpuProcess

__all__ = ["NvmlDevices", "detect_devices"]

_init_lock = threading.Lock()


class NvmlDevices:
    """Reads NVML; every failure is a :class:`DevicesUnavailable` naming NVML's error."""

    source = "nvml"

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise DevicesUnavailable(
                "NVML needs the nvml extra (pip install nvidia-ml-py)"
            ) from exc
        self._nvml: ModuleType = pynvml
        with _init_lock:
            self._call("nvmlInit")

    def count(self) -> int:
        """How many NVIDIA GPUs the driver sees."""
        return int(self._call("nvmlDeviceGetCount"))

    def info(self, index: int) -> GpuInfo:
        """Name, UUID, memory and the processes of GPU ``index``."""
        handle = self._call("nvmlDeviceGetHandleByIndex", index)
        memory = self._call("nvmlDeviceGetMemoryInfo", handle)
        running = [
            *self._call("nvmlDeviceGetComputeRunningProcesses", handle),
            *self._call("nvmlDeviceGetGraphicsRunningProcesses", handle),
        ]
        processes = tuple(
            GpuProcess(int(p.pid), int(p.usedGpuMemory or 0)) for p in running if p.pid
        )
        return GpuInfo(
            index=index,
            name=_text(self._call("nvmlDeviceGetName", handle)),
            uuid=_text(self._call("nvmlDeviceGetUUID", handle)),
            total_bytes=int(memory.total),
            free_bytes=int(memory.free),
            processes=processes,
        )

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, name)(*args)
        except self._nvml.NVMLError as exc:
            raise DevicesUnavailable(f"NVML {name} failed: {exc}") from exc

    def __repr__(self) -> str:
        return "<NvmlDevices>"


def detect_devices() -> NvmlDevices | None:
    """NVML if it loads and sees at least one GPU, else ``None``."""
    try:
        devices = NvmlDevices()
        return devices if devices.count() > 0 else None
    except DevicesUnavailable:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
