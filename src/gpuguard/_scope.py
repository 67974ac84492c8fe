"""Build the guard a settings file asks for: the one place that maps ``[guard] scope``."""

from __future__ import annotations

from ._arbiter import Arbiter
from ._clock import SystemClock
from ._guard import GpuGuard
from ._host_arbiter import HostArbiter
from ._settings import GuardSettings

__all__ = ["build_guard"]


def build_guard(limits: GuardSettings) -> GpuGuard:
    """A guard of the configured scope, with the configured bounds.

    Its hold timeout is the load limit, the longest any operation may take; each call site
    passes its own shorter limit.
    """
    return GpuGuard(
        limits.name,
        max_waiters=limits.max_waiters,
        wait_timeout=limits.wait_timeout_s,
        hold_timeout=limits.load_hold_timeout_s,
        aging_s=limits.aging_s,
        arbiter=_arbiter(limits),
    )


def _arbiter(limits: GuardSettings) -> Arbiter | None:
    """The scope's arbiter; ``None`` for the in-process one the guard builds itself."""
    if limits.scope == "host":
        return HostArbiter(
            limits.name, lock_dir=limits.lock_dir, aging_s=limits.aging_s, clock=SystemClock()
        )
    if limits.scope == "redis":
        from ._redis_arbiter import RedisArbiter  # the redis extra is needed only here

        assert limits.redis_url is not None  # the settings check this
        return RedisArbiter.from_url(
            limits.redis_url.get_secret_value(),
            limits.name,
            aging_s=limits.aging_s,
            ttl_s=limits.redis_ttl_s,
            clock=SystemClock(),
        )
    return None
