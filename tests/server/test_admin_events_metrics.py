"""Admin routes, the SSE event stream's order, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from gpuguard import Priority
from gpuguard.embed import report_fallback

from .conftest import MODEL, Live, gpu_held, until


async def sse_events(live: Live, query: str = "") -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async with live.http.stream("GET", f"/events{query}") as response:
        assert response.status_code == 200
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                yield name, json.loads(line[6:])


async def test_sse_reports_a_chat_in_order(live: Live) -> None:
    events = sse_events(live)
    assert (await anext(events))[0] == "ready"
    reply = asyncio.create_task(
        live.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    )
    seen = []
    async for kind, data in events:
        seen.append((kind, data.get("operation") or data["model"], data["status"]))
        if kind == "gpu" and data["status"] == "completed":
            break
    await reply
    assert seen == [
        ("gpu", "chat", "started"),
        ("model", MODEL, "loading"),
        ("model", MODEL, "loaded"),
        ("gpu", "chat", "completed"),
    ]


async def test_sse_history_replays_past_events(live: Live) -> None:
    await live.http.post("/admin/models/load", json={"model": MODEL})
    events = sse_events(live, "?history=true&kinds=gpu")
    kind, ready = await anext(events)
    assert kind == "ready"
    assert ready["history"] == 2
    assert [(await anext(events))[1]["status"] for _ in range(2)] == ["started", "completed"]


async def test_gpu_route_shows_holder_and_queue_by_priority(live: Live) -> None:
    async with gpu_held(live.guard):
        waiter = asyncio.create_task(live.guard.acquire("bulk", priority=Priority.BACKGROUND))
        await until(lambda: live.guard.queue_length == 1)
        gpu = (await live.http.get("/admin/gpu")).json()
        assert gpu["current"]["operation"] == "test-holder"
        assert gpu["snapshot"]["waiters"][0]["operation"] == "bulk"
        assert gpu["snapshot"]["waiters_by_priority"]["background"] == [
            gpu["snapshot"]["waiters"][0]["lease_id"]
        ]
        assert gpu["recent"][-1]["status"] == "waiting"
        metrics = (await live.http.get("/metrics")).text
        assert 'gpuguard_gpu_queue_length{priority="background"} 1.0' in metrics
        assert "gpuguard_gpu_held 1.0" in metrics
    (await waiter).release()
    assert (await live.http.get("/admin/gpu")).json()["current"] is None


async def test_models_load_unload_prewarm_and_status(live: Live) -> None:
    http = live.http
    assert (await http.post("/admin/models/load", json={"model": "other-llm"})).json() == {
        "model": "other-llm",
        "status": "loaded",
    }
    status = (await http.get("/admin/status")).json()
    assert status["loaded"] == [{"id": "other-llm", "vram_bytes": None, "details": {}}]
    assert status["gpu"]["counters"]["completed"] == 1
    await http.post("/admin/models/unload", json={"model": "other-llm"})
    prewarmed = await http.post("/admin/models/prewarm", json={"model": "other-llm"})
    assert prewarmed.json() == {"model": "other-llm", "status": "ready"}
    models = (await live.client.models.list()).data
    flags = {m.id: m.model_extra["gpuguard"] for m in models if m.model_extra}
    assert flags["other-llm"] == {
        "loaded": True,
        "current": False,
        "vram_bytes": None,
        "capabilities": ["chat"],
    }
    bad = await http.post("/admin/models/load", json={})
    assert bad.status_code == 400


async def test_metrics_count_waits_holds_fallbacks(live: Live) -> None:
    await live.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    report_fallback(live.guard, "schema-refresh", model="m", detail="batch 0 on the CPU")
    text = (await live.http.get("/metrics")).text
    assert 'gpuguard_gpu_wait_seconds_count{operation="chat"} 1.0' in text
    assert 'gpuguard_gpu_hold_seconds_count{operation="chat"} 1.0' in text
    assert 'gpuguard_gpu_fallbacks_total{operation="schema-refresh"} 1.0' in text
    assert 'gpuguard_gpu_operations_total{operation="chat",status="completed"} 1.0' in text
    assert "# TYPE gpuguard_gpu_hung_total counter" in text
    assert "gpuguard_events_dropped_total 0.0" in text
