"""The model gateway: owns the guard, the LLM backend and the embedders."""

from ._embed_sizes import Embedded, EmbeddingSizes, EmbedSize
from ._footprints import FootprintMeter, Footprints
from ._gateway import ModelGateway
from ._resident import ResidentModels
from ._values import GatewayStatus, GatewayTimeouts, GpuWaiting, ModelInfo

__all__ = [
    "EmbedSize",
    "Embedded",
    "EmbeddingSizes",
    "FootprintMeter",
    "Footprints",
    "GatewayStatus",
    "GatewayTimeouts",
    "GpuWaiting",
    "ModelGateway",
    "ModelInfo",
    "ResidentModels",
]
