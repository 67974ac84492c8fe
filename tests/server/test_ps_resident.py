"""``/api/ps`` shows the models kept resident, with their bytes, under the budget policy."""

from __future__ import annotations

from pathlib import Path

import httpx

from gpuguard import FakeClock, GpuGuard
from gpuguard.devices import FakeDevices, FootprintBook
from gpuguard.gateway import FootprintMeter, ModelGateway, ResidentModels
from gpuguard.guard.policies import Budget
from gpuguard.guard.scopes.local import LocalArbiter
from gpuguard.server import create_app, running_server
from gpuguard.settings import LlmSettings, Settings
from gpuguard.testing import FakeBackend, HashEmbedder

GIB = 1024**3
MODEL = "fake-llm"


async def test_ps_lists_the_resident_models_and_their_bytes(tmp_path: Path) -> None:
    devices = FakeDevices.with_gpus(24 * 1024)
    book = FootprintBook(tmp_path / "footprints.json", engine="fake", overrides={MODEL: 3 * GIB})
    resident = ResidentModels()
    policy = Budget(
        lambda: devices.info(0), headroom_bytes=2 * GIB, footprints=book, resident=resident
    )
    guard = GpuGuard(arbiter=LocalArbiter(aging_s=None, policy=policy, clock=FakeClock()))
    gateway = ModelGateway(
        FakeBackend([MODEL]),
        model=MODEL,
        guard=guard,
        cpu_embedder=HashEmbedder(name="hash-embedder"),
        footprints=FootprintMeter(book, lambda _gpu: 0),
        resident=resident,
    )
    app = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        await gateway.load(MODEL)
        loaded = (await http.get("/api/ps")).json()["gpuguard"]["gpu"]["memory"]
        await gateway.unload(MODEL)
        unloaded = (await http.get("/api/ps")).json()["gpuguard"]["gpu"]["memory"]
    await gateway.aclose()
    assert (loaded["resident"], loaded["resident_bytes"]) == ({MODEL: 3 * GIB}, 3 * GIB)
    assert loaded["committed_bytes"] == 3 * GIB  # counted though no lease holds
    assert (unloaded["resident"], unloaded["committed_bytes"]) == ({}, 0)
