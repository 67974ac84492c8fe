"""``[guard]``: the GPU lease's scope, policy and bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from ._parts import Section

__all__ = ["GuardPolicy", "GuardScope", "GuardSettings"]


GuardScope = Literal["process", "host", "redis"]
"""How wide the lease is: this process only, every process on this host, or through Redis."""

GuardPolicy = Literal["auto", "exclusive", "budget"]
"""Who may hold the GPU at once (:func:`gpuguard.guard.policies.choose_policy`)."""


class GuardSettings(Section):
    """The GPU lease: its scope and bounds (seconds; ``None`` means no limit).

    ``scope = "host"`` (the default) shares one lease per GPU ``name`` with every process on
    this host, through ``lock_dir`` (default the machine's ``/run/gpuguard``, shared by the
    members of ``lock_group``; per-user ``/dev/shm/gpuguard-<uid>`` only where that does not
    exist and cannot be created); ``"process"`` keeps it inside this process; ``"redis"``
    shares it with every host that uses the same ``redis_url`` (a holder that dies frees the GPU
    within ``redis_ttl_s``).

    ``policy``: ``"exclusive"`` (one GPU operation at a time), ``"budget"`` (side by side while
    their memory fits the GPU less ``headroom_mb``; every scope) or ``"auto"`` (budget where it
    can work, exclusive otherwise), chosen for each GPU from that GPU's memory.

    ``gpus``: the GPUs this process leases, one lease each: ``"auto"`` (every GPU NVML
    counts; one where NVML is missing) or a list of NVML indices. GPU 0's lease is named
    ``name``; GPU ``i``'s, for any other ``i``, ``gpu<i>`` (:func:`gpuguard.settings.lease_name`).
    """

    name: str = Field(default="gpu0", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    scope: GuardScope = "host"
    lock_dir: Path | None = None
    lock_group: str | None = None
    """The group whose members share the lock directory this process creates (2770)."""
    wait_timeout_s: float | None = Field(default=600.0, ge=0)
    chat_wait_timeout_s: float | None = Field(default=120.0, ge=0)
    load_hold_timeout_s: float | None = Field(default=900.0, ge=0)
    chat_hold_timeout_s: float | None = Field(default=600.0, ge=0)
    embed_hold_timeout_s: float | None = Field(default=120.0, ge=0)
    max_waiters: int = Field(default=64, ge=0)
    aging_s: float | None = Field(default=30.0, gt=0)
    redis_url: SecretStr | None = None
    """``scope = "redis"``: the Redis every host shares the lease through (may hold a password)."""
    redis_ttl_s: float = Field(default=2.0, gt=0)
    policy: GuardPolicy = "auto"
    headroom_mb: int = Field(
        default=2048, ge=0, description="GPU memory the budget policy never hands out."
    )
    gpus: Literal["auto"] | list[int] = "auto"

    @model_validator(mode="after")
    def _gpus_are_distinct_indices(self) -> GuardSettings:
        if isinstance(self.gpus, list):
            if not self.gpus:
                raise ValueError('gpus lists no GPU: give NVML indices ([0, 1]) or "auto"')
            if min(self.gpus) < 0 or len(set(self.gpus)) != len(self.gpus):
                raise ValueError(f"gpus must be distinct NVML indices (0 or more): {self.gpus}")
        return self

    @model_validator(mode="after")
    def _redis_needs_a_url(self) -> GuardSettings:
        if self.scope == "redis" and self.redis_url is None:
            raise ValueError('scope = "redis" needs redis_url (redis://host:6379/0)')
        return self
