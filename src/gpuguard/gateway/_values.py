"""The gateway's value types: its limits, the notice a waiting chat yields, and its views."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..guard import GuardSnapshot
from ..llm._protocol import BackendHealth, LoadedModel

__all__ = ["GatewayStatus", "GatewayTimeouts", "GpuWaiting", "ModelInfo"]


@dataclass(frozen=True, slots=True)
class GatewayTimeouts:
    """How long each kind of GPU operation may wait for, and hold, the lease (seconds).

    ``None`` means no limit. Loads get long hold timeouts (Foundry Local can take minutes);
    a chat's hold timeout bounds the whole streamed answer.
    """

    wait_s: float | None = 600.0
    chat_wait_s: float | None = 120.0
    load_hold_s: float | None = 900.0
    unload_hold_s: float | None = 120.0
    chat_hold_s: float | None = 600.0
    embed_hold_s: float | None = 120.0


@dataclass(frozen=True, slots=True)
class GpuWaiting:
    """A notice about a wait for the GPU, yielded by :meth:`~gpuguard.gateway.ModelGateway.chat`.

    Once before the chat queues for a busy GPU, and once more (``granted_after_s`` set) when
    it got the GPU, so that whoever showed "Waiting for GPU..." can take it down at once, not
    at the first token (which may come after a model load).
    """

    operation: str
    holder: str | None
    queue_length: int
    granted_after_s: float | None = None

    @property
    def status(self) -> str:
        """``waiting``, or ``granted`` once the wait is over."""
        return "waiting" if self.granted_after_s is None else "granted"

    @property
    def message(self) -> str:
        """What to show the user."""
        if self.granted_after_s is not None:
            return f"Got the GPU after {self.granted_after_s:.1f} s"
        held = f" (held by {self.holder})" if self.holder else ""
        return f"Waiting for GPU...{held}"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the backend knows, and whether it is loaded and the gateway's current one."""

    id: str
    loaded: bool
    current: bool
    vram_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """What the status route and ``gpuguard status`` show."""

    backend: BackendHealth
    model: str | None
    loaded: list[LoadedModel]
    gpu: GuardSnapshot
    gpu_embedder: str | None
    cpu_embedder: str | None
    prewarming: bool = False
    errors: list[str] = field(default_factory=list)
    gpus: tuple[GuardSnapshot, ...] = ()
    """Every GPU's snapshot, in the set's order (``gpu`` is the first's)."""
