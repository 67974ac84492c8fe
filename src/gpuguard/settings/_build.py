"""Build the guard a settings file asks for: the one place that maps ``[guard]`` to a guard."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import cache, partial
from pathlib import Path

from .._clock import SystemClock
from .._events import EventBus
from .._exceptions import ConfigError, DevicesUnavailable
from ..devices import Devices, detect_devices, predict_gguf_footprint
from ..devices.remembered import FOOTPRINTS_FILE, FootprintBook, ProcessGpuMemory
from ..guard import GpuGuard, GpuSet
from ..guard.policies import choose_policy
from ..guard.policies.choice import SHARING_SCOPES
from ..guard.scopes import make_arbiter
from ..guard.scopes.host import default_lock_dir
from ._settings import GuardSettings, Settings

__all__ = [
    "DetectDevices",
    "build_footprints",
    "build_guard",
    "build_guards",
    "detect_once",
    "gpu_indices",
    "lease_name",
    "lock_dir_of",
]

_log = logging.getLogger("gpuguard.guard")

MIB = 1024 * 1024

DetectDevices = Callable[[], Devices | None]
"""How the GPU driver is found: :func:`~gpuguard.devices.detect_devices`, or a fake."""


def detect_once(detect: DetectDevices | None = None) -> DetectDevices:
    """``detect`` (NVML's :func:`~gpuguard.devices.detect_devices` by default), asked once.

    What a server builds at start-up (its footprints and their meter, its GPUs, their
    guards) shares the one answer: the driver is queried once, not once per part.
    """
    return cache(detect_devices if detect is None else detect)


def lock_dir_of(limits: GuardSettings) -> Path | None:
    """Where a host-scope lease meets the other processes (None for other scopes)."""
    if limits.scope != "host":
        return None
    return limits.lock_dir if limits.lock_dir is not None else default_lock_dir()


def _gpu_pids(detect: DetectDevices, index: int) -> Callable[[], set[int]]:
    """The pids the driver lists on GPU ``index`` now; the driver is found at the first call."""
    found = detect_once(detect)

    def gpu_pids() -> set[int]:
        devices = found()
        if devices is None:
            raise DevicesUnavailable("no GPU driver here lists the processes on the GPU")
        return {process.pid for process in devices.info(index).processes}

    return gpu_pids


def lease_name(limits: GuardSettings, index: int) -> str:
    """The lease name of GPU ``index``: ``[guard] name`` for GPU 0, ``gpu<index>`` for others.

    Processes meet on the name (a lock directory's file, a Redis key, the mark), so GPU 0
    keeps the name a single-GPU server has always used.
    """
    return limits.name if index == 0 else f"gpu{index}"


def build_guard(
    limits: GuardSettings,
    *,
    detect: DetectDevices = detect_devices,
    footprints: Mapping[str, int] | None = None,
    index: int = 0,
    events: EventBus | None = None,
    resident: Collection[str] | None = None,
) -> GpuGuard:
    """A guard of the configured scope and policy, with the configured bounds, for one GPU.

    Its hold timeout is the load limit, the longest any operation may take; each call site
    passes its own shorter limit. The policy (``auto`` looks at GPU ``index`` as ``detect``
    finds it) is logged once; ``budget`` where it cannot work raises
    :class:`~gpuguard.ConfigError`. ``footprints`` are the budget's bytes per model (a
    :class:`FootprintBook`, read live); ``resident`` the models kept loaded on this GPU
    (the gateway's record, read live). The host and Redis scopes ask the GPU's driver
    (``detect``, first when a holder dies) which processes use it, to wait for a dead
    holder's context to be torn down before the next is granted. ``events`` is the bus to
    publish on (the guards of one :class:`GpuSet` share one).
    """
    clock = SystemClock()
    name = lease_name(limits, index)
    shares = limits.policy != "exclusive" and limits.scope in SHARING_SCOPES
    devices = detect() if shares else None  # the scope alone rules the budget out
    choice = choose_policy(
        limits.policy,
        scope=limits.scope,
        read=None if devices is None else partial(devices.info, index),
        headroom_bytes=limits.headroom_mb * MIB,
        footprints=footprints,
        resident=resident,
    )
    _log.info("GPU %s runs the %s policy: %s", name, choice.policy.name, choice.reason)
    redis_url = None if limits.redis_url is None else limits.redis_url.get_secret_value()
    arbiter = make_arbiter(
        limits.scope,
        name,
        aging_s=limits.aging_s,
        clock=clock,
        lock_dir=limits.lock_dir,
        lock_group=limits.lock_group,
        redis_url=redis_url,
        ttl_s=limits.redis_ttl_s,
        policy=choice.policy,
        gpu_pids=_gpu_pids(detect, index),
    )
    return GpuGuard(
        name,
        max_waiters=limits.max_waiters,
        wait_timeout=limits.wait_timeout_s,
        hold_timeout=limits.load_hold_timeout_s,
        aging_s=limits.aging_s,
        clock=clock,
        events=events,
        arbiter=arbiter,
    )


def gpu_indices(limits: GuardSettings, detect: DetectDevices = detect_devices) -> list[int]:
    """The GPUs ``[guard] gpus`` names: every GPU NVML counts for ``auto`` (GPU 0 without it)."""
    if limits.gpus != "auto":
        return list(limits.gpus)
    devices = detect()
    if devices is None:
        return [0]
    try:
        return list(range(max(1, devices.count())))
    except DevicesUnavailable as exc:
        _log.warning("GPUs not counted (%s): leasing GPU 0 only", exc)
        return [0]


def build_guards(
    limits: GuardSettings,
    *,
    detect: DetectDevices = detect_devices,
    footprints: Mapping[str, int] | None = None,
    indices: Sequence[int] | None = None,
    resident: Callable[[int], Collection[str]] | None = None,
) -> GpuSet:
    """One guard per GPU of ``[guard] gpus``, in order, on one bus (:func:`build_guard` each).

    ``indices`` are the GPUs when already counted (:func:`gpu_indices`); ``resident(i)``
    the models kept loaded on GPU ``i``, for its budget. Each GPU's policy
    is chosen from its own memory. The driver is asked once (``detect``) for every guard.
    Two GPUs whose leases would share a name (``[guard] name = "gpu1"`` beside GPU 1) are a
    :class:`~gpuguard.ConfigError`.
    """
    found = detect_once(detect)
    indices = gpu_indices(limits, found) if indices is None else list(indices)
    names = [lease_name(limits, index) for index in indices]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"[guard] name = {limits.name!r} is the lease name of another GPU in gpus "
            f"({', '.join(names)}): GPU i > 0 is leased as gpu<i>; choose another name"
        )
    events = EventBus()
    return GpuSet(
        {
            index: build_guard(
                limits,
                detect=found,
                footprints=footprints,
                index=index,
                events=events,
                resident=None if resident is None else resident(index),
            )
            for index in indices
        }
    )


def build_footprints(
    settings: Settings, *, detect: DetectDevices = detect_devices
) -> tuple[FootprintBook, ProcessGpuMemory | None]:
    """The models' footprints for this engine, and the meter that measures loads and batches.

    Kept in ``<data_dir>/footprints.json``; ``[models."NAME"] vram_mb`` overrides them; a
    llama-cpp model with a GGUF ``path`` is predicted from its header. The meter reads this
    process's memory on whichever GPU it is asked for; no meter without a GPU NVML can read
    (nothing is measured then).
    """
    entries = {model.id or name: model for name, model in settings.models.items()}
    overrides = {m: e.vram_mb * MIB for m, e in entries.items() if e.vram_mb is not None}

    def predict(model: str) -> int | None:
        entry = entries.get(model)
        if entry is None or entry.path is None or settings.llm.backend != "llama-cpp":
            return None
        try:
            return predict_gguf_footprint(entry.path, context_tokens=entry.context_size).total_bytes
        except (ConfigError, ImportError, OSError) as exc:
            _log.info("no footprint predicted for %r: %s", model, exc)
            return None

    book = FootprintBook(
        settings.data_dir / FOOTPRINTS_FILE,
        engine=settings.llm.backend,
        overrides=overrides,
        predict=predict,
    )
    devices = detect()
    return book, None if devices is None else ProcessGpuMemory(devices)
