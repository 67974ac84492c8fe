"""Several GPUs on the server's surfaces: /admin/gpu and /admin/status list every GPU,
/metrics labels each GPU's policy, holders, line and memory; one GPU keeps its old shape."""

from __future__ import annotations

import re

from gpuguard import GpuSet
from gpuguard.devices import FakeDevices
from gpuguard.settings import build_guards, load_settings

from .conftest import LiveFactory, gpu_held

GIB = 1024**3


def small_and_big() -> GpuSet:
    """GPU 0 of 8 GiB (exclusive under auto), GPU 1 of 80 GiB (the budget)."""
    devices = FakeDevices.with_gpus(8 * 1024, 80 * 1024)
    devices.set_free(1, 70 * GIB)  # 10 GiB taken by another program
    limits = load_settings(guard={"scope": "process", "name": "surface0"}).guard
    return build_guards(limits, detect=lambda: devices)


async def test_admin_gpu_keeps_the_first_gpus_shape_and_lists_every_gpu(
    make_live: LiveFactory,
) -> None:
    gpus = small_and_big()
    async with make_live(gpus=gpus) as live, gpu_held(gpus[1], "train"):
        body = (await live.http.get("/admin/gpu?recent=0")).json()
        assert body["snapshot"]["guard"] == "surface0"
        assert body["current"] is None
        listed = body["gpus"]
        assert [(g["gpu"], g["policy"]) for g in listed] == [
            ("surface0", "exclusive"),
            ("gpu1", "budget"),
        ]
        assert listed[1]["holders"][0]["operation"] == "train"
        assert listed[1]["memory"]["free_bytes"] == 70 * GIB
        assert listed[0]["memory"] is None
        status = (await live.http.get("/admin/status")).json()
        assert [g["gpu"] for g in status["gpus"]] == ["surface0", "gpu1"]
    await gpus.aclose()


async def test_metrics_label_each_gpu_with_its_policy_and_memory(make_live: LiveFactory) -> None:
    gpus = small_and_big()
    async with make_live(gpus=gpus) as live, gpu_held(gpus[1], "train"):
        text = (await live.http.get("/metrics")).text
        assert 'gpuguard_gpu_policy{gpu="surface0",policy="exclusive"} 1.0' in text
        assert 'gpuguard_gpu_policy{gpu="gpu1",policy="budget"} 1.0' in text
        assert 'gpuguard_gpu_holders{gpu="surface0"} 0.0' in text
        assert 'gpuguard_gpu_holders{gpu="gpu1"} 1.0' in text
        samples = dict(re.findall(r"^(gpuguard_gpu_\w+_bytes\{[^}]*\}) (\S+)$", text, re.M))
        assert float(samples['gpuguard_gpu_budget_bytes{gpu="gpu1"}']) == 80 * GIB - 2 * GIB
        assert float(samples['gpuguard_gpu_free_bytes{gpu="gpu1"}']) == 70 * GIB
        assert float(samples['gpuguard_gpu_committed_bytes{gpu="gpu1"}']) == 10 * GIB
        # Exclusive reads no memory: no memory figures for that GPU.
        assert not re.search(r'gpuguard_gpu_(budget|free)_bytes\{gpu="surface0"\}', text)
        # The unlabelled families are still the first GPU's.
        assert "gpuguard_gpu_held 0.0" in text
    await gpus.aclose()


async def test_one_gpu_lists_itself_and_keeps_every_old_field(make_live: LiveFactory) -> None:
    async with make_live() as live:
        body = (await live.http.get("/admin/gpu?recent=0")).json()
        assert set(body) == {"current", "snapshot", "recent", "gpus"}
        assert body["gpus"] == [{"gpu": body["snapshot"]["guard"], **body["snapshot"]}]
        text = (await live.http.get("/metrics")).text
        assert 'gpuguard_gpu_policy{gpu="gpu0",policy="exclusive"} 1.0' in text


async def test_api_ps_says_a_model_holds_the_gpu_it_works_on(make_live: LiveFactory) -> None:
    gpus = small_and_big()
    async with make_live(gpus=gpus) as live:
        await live.gateway.load("other-llm")
        async with gpus[1].hold("chat", model="other-llm"):
            models = (await live.http.get("/api/ps")).json()["models"]
            held = {m["name"]: m["gpuguard"]["holding_gpu"] for m in models if "gpuguard" in m}
            assert held["other-llm"] is True
    await gpus.aclose()
