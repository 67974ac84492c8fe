"""Build the guard a settings file asks for: the one place that maps ``[guard]`` to a guard."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from functools import cache, partial
from pathlib import Path

from .._clock import SystemClock
from .._exceptions import ConfigError, DevicesUnavailable
from ..devices import Devices, detect_devices, predict_gguf_footprint
from ..devices.remembered import FOOTPRINTS_FILE, FootprintBook, ProcessGpuMemory
from ..guard import GpuGuard
from ..guard.policies import choose_policy
from ..guard.policies.choice import SHARING_SCOPES
from ..guard.scopes import make_arbiter
from ..guard.scopes.host import default_lock_dir
from ._settings import GuardSettings, Settings

__all__ = ["build_footprints", "build_guard", "lock_dir_of"]

_log = logging.getLogger("gpuguard.guard")

MIB = 1024 * 1024


def lock_dir_of(limits: GuardSettings) -> Path | None:
    """Where a host-scope lease meets the other processes (None for other scopes)."""
    if limits.scope != "host":
        return None
    return limits.lock_dir if limits.lock_dir is not None else default_lock_dir()


def _gpu_pids(detect: Callable[[], Devices | None]) -> Callable[[], set[int]]:
    """The pids the driver lists on the first GPU now; the driver is found at the first call."""
    found = cache(detect)

    def gpu_pids() -> set[int]:
        devices = found()
        if devices is None:
            raise DevicesUnavailable("no GPU driver here lists the processes on the GPU")
        return {process.pid for process in devices.info(0).processes}

    return gpu_pids


def build_guard(
    limits: GuardSettings,
    *,
    detect: Callable[[], Devices | None] = detect_devices,
    footprints: Mapping[str, int] | None = None,
    resident: Collection[str] | None = None,
) -> GpuGuard:
    """A guard of the configured scope and policy, with the configured bounds.

    Its hold timeout is the load limit, the longest any operation may take; each call site
    passes its own shorter limit. The policy (``auto`` looks at the first GPU ``detect``
    finds) is logged once; ``budget`` where it cannot work raises :class:`~gpuguard.ConfigError`.
    ``footprints`` are the budget's bytes per model (a :class:`FootprintBook`, read live);
    ``resident`` the models kept loaded (the gateway's record, read live).
    The host scope asks the first GPU's driver (``detect``, first when a holder dies) which
    processes use it, to wait for a dead holder's context to be torn down before the next
    is granted.
    """
    clock = SystemClock()
    shares = limits.policy != "exclusive" and limits.scope in SHARING_SCOPES
    devices = detect() if shares else None  # the scope alone rules the budget out
    choice = choose_policy(
        limits.policy,
        scope=limits.scope,
        read=None if devices is None else partial(devices.info, 0),
        headroom_bytes=limits.headroom_mb * MIB,
        footprints=footprints,
        resident=resident,
    )
    _log.info("GPU %s runs the %s policy: %s", limits.name, choice.policy.name, choice.reason)
    redis_url = None if limits.redis_url is None else limits.redis_url.get_secret_value()
    arbiter = make_arbiter(
        limits.scope,
        limits.name,
        aging_s=limits.aging_s,
        clock=clock,
        lock_dir=limits.lock_dir,
        lock_group=limits.lock_group,
        redis_url=redis_url,
        ttl_s=limits.redis_ttl_s,
        policy=choice.policy,
        gpu_pids=_gpu_pids(detect),
    )
    return GpuGuard(
        limits.name,
        max_waiters=limits.max_waiters,
        wait_timeout=limits.wait_timeout_s,
        hold_timeout=limits.load_hold_timeout_s,
        aging_s=limits.aging_s,
        clock=clock,
        arbiter=arbiter,
    )


def build_footprints(
    settings: Settings, *, detect: Callable[[], Devices | None] = detect_devices
) -> tuple[FootprintBook, ProcessGpuMemory | None]:
    """The models' footprints for this engine, and the meter that measures loads.

    Kept in ``<data_dir>/footprints.json``; ``[models."NAME"] vram_mb`` overrides them; a
    llama-cpp model with a GGUF ``path`` is predicted from its header. No meter without a
    GPU NVML can read (nothing is measured then).
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
