"""Build the guard a settings file asks for: the one place that maps ``[guard]`` to a guard."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from .._clock import SystemClock
from ..devices import Devices, detect_devices
from ..guard import GpuGuard
from ..guard.policies import choose_policy
from ..guard.scopes import make_arbiter
from ._settings import GuardSettings

__all__ = ["build_guard"]

_log = logging.getLogger("gpuguard.guard")

MIB = 1024 * 1024


def build_guard(
    limits: GuardSettings, *, detect: Callable[[], Devices | None] = detect_devices
) -> GpuGuard:
    """A guard of the configured scope and policy, with the configured bounds.

    Its hold timeout is the load limit, the longest any operation may take; each call site
    passes its own shorter limit. The policy (``auto`` looks at the first GPU ``detect``
    finds) is logged once; ``budget`` where it cannot work raises :class:`~gpuguard.ConfigError`.
    """
    clock = SystemClock()
    shares = limits.policy != "exclusive" and limits.scope == "process"
    devices = detect() if shares else None  # the scope alone rules the budget out
    choice = choose_policy(
        limits.policy,
        scope=limits.scope,
        read=None if devices is None else partial(devices.info, 0),
        headroom_bytes=limits.headroom_mb * MIB,
    )
    _log.info("GPU %s runs the %s policy: %s", limits.name, choice.policy.name, choice.reason)
    redis_url = None if limits.redis_url is None else limits.redis_url.get_secret_value()
    arbiter = make_arbiter(
        limits.scope,
        limits.name,
        aging_s=limits.aging_s,
        clock=clock,
        lock_dir=limits.lock_dir,
        redis_url=redis_url,
        ttl_s=limits.redis_ttl_s,
        policy=choice.policy,
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
