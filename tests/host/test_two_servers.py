"""Two ``gpuguard serve`` processes and a ``gpuguard run`` program on one LLM server.

The LLM server is the Foundry Local protocol double, a real HTTP server on 127.0.0.1 whose
ledger records every piece of GPU work (loads, unloads, chats, embeddings) as an interval.
With the host scope (the default) they share one lease, so the ledger shows no overlap.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import httpx

from gpuguard.cli._samples import write_sample_database
from gpuguard.testing import IntervalRecorder
from gpuguard.testing.foundry_double import FoundryDouble

from .conftest import READY_TIMEOUT_S, Processes, line

MODEL = "phi-4-mini"
OTHER_MODEL = "qwen2.5-0.5b"
EMBEDDING_DIMENSION = 384  # the hash CPU embedder's, so both embedders agree
TERMINAL = {"completed", "failed", "cancelled"}

# GPU work of its own, straight to the LLM server: one chat, recorded by the double.
RUN_PROGRAM = """
import json, sys, urllib.request
body = {"model": sys.argv[1], "messages": [{"role": "user", "content": "train a b c"}]}
request = urllib.request.Request(
    sys.argv[2] + "/v1/chat/completions",
    data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=30) as answer:
    print(json.load(answer)["choices"][0]["message"]["content"], flush=True)
"""


# The operator's token, so that the test is the servers' admin.
TOKEN = "two-servers-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_server(processes: Processes, data_dir: Path, llm_url: str, sources: Path) -> str:
    port = free_port()
    await processes.gpuguard(
        "serve",
        GPUGUARD_DATA_DIR=str(data_dir),
        GPUGUARD_SERVER__HOST="127.0.0.1",
        GPUGUARD_SERVER__PORT=str(port),
        GPUGUARD_SERVER__TOKEN=TOKEN,
        GPUGUARD_LLM__BACKEND="foundry",
        GPUGUARD_LLM__BASE_URL=llm_url,
        GPUGUARD_LLM__MODEL=MODEL,
        GPUGUARD_EMBEDDINGS__GPU_ENGINE="remote",
        GPUGUARD_EMBEDDINGS__GPU_MODEL=MODEL,
        GPUGUARD_EMBEDDINGS__URL=llm_url,
        GPUGUARD_EMBEDDINGS__CPU_ENGINE="hash",
        GPUGUARD_EMBEDDINGS__BATCH_SIZE="4",
        GPUGUARD_SOURCES__DOCUMENT_ROOTS=json.dumps([str(sources)]),
    )
    return f"http://127.0.0.1:{port}"


async def until_up(http: httpx.AsyncClient, url: str) -> None:
    """Bounded readiness poll of a server process that is starting."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
    while True:
        try:
            if (await http.get(f"{url}/admin/status")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"{url} did not start"
        await asyncio.sleep(0.1)


async def streamed_chat(http: httpx.AsyncClient, url: str) -> str:
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "one two"}]}
    text = ""
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for raw in response.aiter_lines():
            if raw.startswith("data: ") and raw != "data: [DONE]":
                for choice in json.loads(raw[6:]).get("choices", []):
                    text += choice.get("delta", {}).get("content") or ""
    return text


async def load_and_unload(http: httpx.AsyncClient, url: str) -> None:
    loaded = await http.post(f"{url}/admin/models/load", json={"model": OTHER_MODEL})
    assert loaded.status_code == 200, loaded.text
    unloaded = await http.post(f"{url}/admin/models/unload", json={"model": OTHER_MODEL})
    assert unloaded.status_code == 200, unloaded.text


async def schema_refresh(http: httpx.AsyncClient, url: str, database_url: str) -> dict[str, Any]:
    started = await http.post(
        f"{url}/admin/jobs/schema-refresh", json={"database_url": database_url}
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
    while True:
        job: dict[str, Any] = (await http.get(f"{url}/admin/jobs/{job_id}")).json()
        if job["status"] in TERMINAL:
            return job
        assert asyncio.get_running_loop().time() < deadline, f"job {job_id} never ended"
        await asyncio.sleep(0.1)  # bounded poll of another process's job


async def test_two_servers_and_a_run_program_never_overlap_on_one_llm_server(
    tmp_path: Path, processes: Processes
) -> None:
    recorder = IntervalRecorder()
    database_url = write_sample_database(tmp_path / "shop.sqlite")
    with FoundryDouble(
        recorder=recorder,
        load_latency_s=0.05,
        unload_latency_s=0.02,
        token_latency_s=0.005,
        embedding_dimension=EMBEDDING_DIMENSION,
    ) as double:
        urls = [
            await start_server(processes, tmp_path / n, double.base_url, tmp_path) for n in "ab"
        ]
        async with httpx.AsyncClient(timeout=READY_TIMEOUT_S, headers=ADMIN) as http:
            for url in urls:
                await until_up(http, url)
            run = await processes.gpuguard(
                "run", "--", sys.executable, "-c", RUN_PROGRAM, MODEL, double.base_url
            )
            results = await asyncio.gather(
                *(schema_refresh(http, url, database_url) for url in urls),
                *(streamed_chat(http, url) for url in urls),
                *(load_and_unload(http, url) for url in urls),
            )
            assert await line(run) == "echo: train a b c"
            assert await asyncio.wait_for(run.wait(), READY_TIMEOUT_S) == 0

    jobs, chats = results[:2], results[2:4]
    assert [job["status"] for job in jobs] == ["completed", "completed"], jobs
    assert chats == ["echo: one two", "echo: one two"]
    work = [interval.what for interval in recorder.intervals]
    assert work.count(f"chat {MODEL}") == 3  # two servers' chats and the run program's
    # Schema batches run on the GPU embedder only when the GPU is free: under load they may all
    # fall back to the CPU, so the double need not have seen any embeddings.
    assert {f"load {OTHER_MODEL}", f"unload {OTHER_MODEL}"} <= set(work)
    assert recorder.overlaps() == []
