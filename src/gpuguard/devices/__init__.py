"""GPU facts behind one seam: name, memory and the processes using each GPU.

:class:`Devices` is the interface (:mod:`._protocol`); :class:`NvmlDevices` reads NVIDIA's
management library (the ``nvml`` extra, ``nvidia-ml-py``), :class:`FakeDevices` is set by
hand for tests, as :class:`~gpuguard.FakeClock` is for time. :func:`detect_devices` returns
NVML where it works and ``None`` otherwise (no NVIDIA driver, no GPU, unified memory).
:func:`predict_gguf_footprint` (:mod:`.footprint`) predicts a llama.cpp model's memory from
its GGUF header, before it is first loaded.
"""

from .._exceptions import DevicesUnavailable
from ._protocol import Devices, GpuInfo, GpuProcess
from .fake import FakeDevices
from .footprint import Footprint, predict_gguf_footprint
from .nvml import NvmlDevices, detect_devices

__all__ = [
    "Devices",
    "DevicesUnavailable",
    "FakeDevices",
    "Footprint",
    "GpuInfo",
    "GpuProcess",
    "NvmlDevices",
    "detect_devices",
    "predict_gguf_footprint",
]
