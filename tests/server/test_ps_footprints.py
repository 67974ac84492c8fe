"""``/api/ps`` reports a loaded model's known footprint as ``size`` and ``size_vram``."""

from __future__ import annotations

from pathlib import Path

import httpx

from gpuguard import GpuGuard
from gpuguard.devices import FootprintBook
from gpuguard.gateway import FootprintMeter, ModelGateway
from gpuguard.server import create_app, running_server
from gpuguard.settings import LlmSettings, Settings
from gpuguard.testing import FakeBackend, HashEmbedder

GIB = 1024**3
MODEL = "fake-llm"


async def test_ps_reports_the_footprint_of_a_loaded_model(tmp_path: Path) -> None:
    book = FootprintBook(tmp_path / "footprints.json", engine="fake", overrides={MODEL: 3 * GIB})
    gateway = ModelGateway(
        FakeBackend([MODEL]),
        model=MODEL,
        guard=GpuGuard(),
        cpu_embedder=HashEmbedder(name="hash-embedder"),
        footprints=FootprintMeter(book, lambda _gpu: 0),
    )
    app = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        await gateway.load(MODEL)
        raw = (await http.get("/api/ps")).json()
    await gateway.aclose()
    [entry] = [m for m in raw["models"] if m["name"] == MODEL]
    assert (entry["size"], entry["size_vram"]) == (3 * GIB, 3 * GIB)
    gpu = raw["gpuguard"]["gpu"]
    assert gpu["holders"] == []
    assert gpu["memory"] is None  # the exclusive policy counts no memory
    assert gpu["policy"] == "exclusive"
