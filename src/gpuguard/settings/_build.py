"""Build the guard a settings file asks for: the one place that maps ``[guard]`` to a guard."""

from __future__ import annotations

from .._clock import SystemClock
from ..guard import GpuGuard
from ..guard.scopes import make_arbiter
from ._settings import GuardSettings

__all__ = ["build_guard"]


def build_guard(limits: GuardSettings) -> GpuGuard:
    """A guard of the configured scope, with the configured bounds.

    Its hold timeout is the load limit, the longest any operation may take; each call site
    passes its own shorter limit.
    """
    clock = SystemClock()
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
