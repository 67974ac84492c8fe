"""The model gateway: owns the guard, the LLM backend and the embedders."""

from ._embed_sizes import Embedded, EmbeddingSizes, EmbedSize
from ._gateway import GatewayStatus, GatewayTimeouts, GpuWaiting, ModelGateway, ModelInfo

__all__ = [
    "EmbedSize",
    "Embedded",
    "EmbeddingSizes",
    "GatewayStatus",
    "GatewayTimeouts",
    "GpuWaiting",
    "ModelGateway",
    "ModelInfo",
]
