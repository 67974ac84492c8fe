"""The current model changes only to a model that loaded."""

from __future__ import annotations

from gpuguard.gateway import ModelGateway
from gpuguard.testing import FakeBackend


async def test_set_model_switches_once_the_model_is_loaded() -> None:
    async with ModelGateway(FakeBackend(["m1", "m2"]), model="m1") as gateway:
        await gateway.set_model("m2")
        await gateway.set_model("nope")  # cancels m2's prewarm: m2 never loaded
        assert gateway.model == "m1"
        await (await gateway.set_model("nope"))
        assert gateway.model == "m1"
        assert any("nope" in error for error in (await gateway.status()).errors)
        await (await gateway.set_model("m2"))
        assert gateway.model == "m2"
