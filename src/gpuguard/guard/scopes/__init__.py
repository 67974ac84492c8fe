"""How wide a lease is: one :class:`~gpuguard.guard._arbiter.Arbiter` per scope.

* ``process`` (:mod:`.local`): one process; the library's default.
* ``host`` (:mod:`.host`): every process on this machine, through a lock directory, ``flock``
  and the kernel's liveness.
* ``redis`` (:mod:`.redis`): every process on every host that shares one Redis.

:func:`make_arbiter` is the one place that maps a scope's name to its implementation. Each
scope imports only the guard's protocol and queue; the Redis scope (which needs the ``redis``
extra) is imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final, Literal

from ..._clock import Clock
from .._arbiter import Arbiter
from ..policies import EXCLUSIVE, Policy

__all__ = ["SCOPES", "ScopeName", "make_arbiter"]

ScopeName = Literal["process", "host", "redis"]

SCOPES: Final[tuple[ScopeName, ...]] = ("process", "host", "redis")


def make_arbiter(
    scope: ScopeName,
    name: str,
    *,
    aging_s: float | None,
    clock: Clock,
    lock_dir: Path | str | None = None,
    lock_group: str | None = None,
    redis_url: str | None = None,
    ttl_s: float = 2.0,
    prefix: str = "gpuguard",
    policy: Policy = EXCLUSIVE,
    gpu_pids: Callable[[], Collection[int]] | None = None,
) -> Arbiter:
    """The arbiter of ``scope`` for the GPU ``name``, granting under ``policy``.

    ``lock_dir`` and ``lock_group`` are for the host scope (default: see
    :func:`.host.default_lock_dir`); ``redis_url``, ``ttl_s`` and ``prefix`` for the Redis
    scope; ``gpu_pids`` (the pids the driver lists on this GPU) for both: the next holder
    waits, bounded, until a dead holder of this host is gone from the GPU (:mod:`._teardown`).
    Every scope bears the GPU's machine-wide mark while this process holds (:mod:`._mark`).
    Every scope grants several holders at once under a sharing policy (the
    host scope keeps the ledger in its state, the Redis one in Redis).
    """
    if scope == "process":
        from .local import LocalArbiter

        return LocalArbiter(aging_s=aging_s, policy=policy, clock=clock, name=name)
    if scope == "host":
        from .host import HostArbiter

        return HostArbiter(
            name,
            lock_dir=lock_dir,
            lock_group=lock_group,
            aging_s=aging_s,
            clock=clock,
            gpu_pids=gpu_pids,
            policy=policy,
        )
    if scope == "redis":
        if redis_url is None:
            raise ValueError("the redis scope needs a redis_url")
        from .redis import RedisArbiter  # the redis extra is needed only here

        return RedisArbiter.from_url(
            redis_url,
            name,
            aging_s=aging_s,
            ttl_s=ttl_s,
            prefix=prefix,
            clock=clock,
            policy=policy,
            gpu_pids=gpu_pids,
        )
    raise ValueError(f"unknown guard scope {scope!r}; expected one of {', '.join(SCOPES)}")
