"""Which policy a guard runs: ``auto``, ``exclusive`` or ``budget``, for a scope and a GPU.

``auto`` picks :class:`~.budget.Budget` on a GPU whose memory NVML reports (a discrete
NVIDIA GPU: on unified memory NVML reports none) with at least :data:`AUTO_MIN_TOTAL_BYTES`,
in every scope; :data:`~.exclusive.EXCLUSIVE` otherwise. ``budget`` asked for where it cannot
work is refused with a :class:`~gpuguard.ConfigError` that says why. The budget's ledger lives
in the process (process scope), in the host lease's state (host scope: every process of the
machine) or in Redis (Redis scope: the lease name is one GPU, whose memory every host reads).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from ..._exceptions import ConfigError, DevicesUnavailable
from ._policy import Policy
from .budget import Budget, GpuMemory
from .exclusive import EXCLUSIVE

__all__ = ["AUTO_MIN_TOTAL_BYTES", "PolicyChoice", "PolicyName", "choose_policy"]

PolicyName = Literal["auto", "exclusive", "budget"]

AUTO_MIN_TOTAL_BYTES: Final = 16 * 1024**3
"""The smallest GPU on which ``auto`` shares: below it one model fills the card anyway."""

SHARING_SCOPES: Final = frozenset({"process", "host", "redis"})
"""The scopes whose arbiter can grant several holders at once."""


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    """The policy chosen and why, in words for the log."""

    policy: Policy
    reason: str


def choose_policy(
    requested: PolicyName,
    *,
    scope: str,
    read: Callable[[], GpuMemory] | None,
    headroom_bytes: int,
    footprints: Mapping[str, int] | None = None,
    resident: Collection[str] | None = None,
) -> PolicyChoice:
    """The policy for ``requested`` in ``scope`` on the GPU ``read`` reports (``None``: none).

    ``footprints`` and ``resident`` go to the budget as they are (see :class:`Budget`).

    Raises :class:`~gpuguard.ConfigError` if ``budget`` is asked for where it cannot work.
    """
    if requested == "exclusive":
        return PolicyChoice(EXCLUSIVE, "exclusive, as configured")
    if requested not in ("auto", "budget"):
        raise ConfigError(f"unknown guard policy {requested!r}; expected auto, exclusive or budget")
    explicit = requested == "budget"
    refusal, total = _refusal(scope, read, headroom_bytes, explicit=explicit)
    if refusal is not None:
        if explicit:
            raise ConfigError(f"policy = 'budget' cannot work here: {refusal}")
        return PolicyChoice(EXCLUSIVE, f"auto chose exclusive: {refusal}")
    assert read is not None
    budget = Budget(read, headroom_bytes=headroom_bytes, footprints=footprints, resident=resident)
    gib = total / 1024**3
    how = "as configured" if explicit else "auto chose it"
    return PolicyChoice(
        budget, f"budget ({how}): {gib:.1f} GiB, {headroom_bytes // 1024**2} MiB kept free"
    )


def _refusal(
    scope: str, read: Callable[[], GpuMemory] | None, headroom_bytes: int, *, explicit: bool
) -> tuple[str | None, int]:
    """Why the budget cannot run here (``None`` if it can), and the GPU's memory."""
    if scope not in SHARING_SCOPES:
        return (
            f"the {scope} scope keeps one holder; the budget shares the GPU in the process, "
            "host and Redis scopes only",
            0,
        )
    if read is None:
        return "no NVIDIA GPU that NVML can read (unified memory, no driver, or CPU only)", 0
    try:
        total = read().total_bytes
    except DevicesUnavailable as exc:
        return f"the GPU's memory cannot be read ({exc})", 0
    if total <= headroom_bytes:
        return f"the headroom ({headroom_bytes} bytes) is all of the GPU's memory", total
    if not explicit and total < AUTO_MIN_TOTAL_BYTES:
        return f"{total / 1024**3:.1f} GiB is too small to share", total
    return None, total
