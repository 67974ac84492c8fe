"""Settings: command-line options, ``GPUGUARD_*`` variables and a TOML or env file, checked.

The model of every section (:mod:`._settings`, with the shared parts in :mod:`._parts`), and
:func:`build_guard`, which builds the guard ``[guard]`` asks for (and :func:`build_footprints`, the
models' remembered GPU memory it counts). Needs the ``server`` extra
(pydantic-settings).
"""

from ._build import (
    DetectDevices,
    build_footprints,
    build_guard,
    build_guards,
    detect_once,
    gpu_indices,
    lease_name,
    lock_dir_of,
)
from ._settings import (
    CONFIG_ENV_VAR,
    EmbeddingSettings,
    GuardSettings,
    IndexSettings,
    LlmSettings,
    ModelSettings,
    ServerSettings,
    Settings,
    SourceSettings,
    is_loopback,
    load_settings,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "DetectDevices",
    "EmbeddingSettings",
    "GuardSettings",
    "IndexSettings",
    "LlmSettings",
    "ModelSettings",
    "ServerSettings",
    "Settings",
    "SourceSettings",
    "build_footprints",
    "build_guard",
    "build_guards",
    "detect_once",
    "gpu_indices",
    "is_loopback",
    "lease_name",
    "load_settings",
    "lock_dir_of",
]
