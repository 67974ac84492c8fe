"""GPU facts behind one seam: name, memory and the processes using each GPU.

:class:`Devices` is the interface (:mod:`._protocol`); :class:`NvmlDevices` reads NVIDIA's
management library (the ``nvml`` extra, ``nvidia-ml-py``), :class:`FakeDevices` is set by
hand for tests, as :class:`~gpuguard.FakeClock` is for time. :func:`detect_devices` returns
NVML where it works and ``None`` otherwise (no NVIDIA driver, no GPU, unified memory).
"""

from .._exceptions import DevicesUnavailable
from ._protocol import Devices, GpuInfo, GpuProcess
from .fake import FakeDevices
from .nvml import NvmlDevices, detect_devices

__all__ = [
    "Devices",
    "DevicesUnavailable",
    "FakeDevices",
    "GpuInfo",
    "GpuProcess",
    "NvmlDevices",
    "detect_devices",
]
