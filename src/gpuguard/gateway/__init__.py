"""The model gateway: owns the guard, the LLM backend and the embedders."""

from ._gateway import GatewayStatus, GatewayTimeouts, GpuWaiting, ModelGateway, ModelInfo

__all__ = ["GatewayStatus", "GatewayTimeouts", "GpuWaiting", "ModelGateway", "ModelInfo"]
