"""``gpuguard demo``: the start-up scenario on embedded defaults, its timelines and its verdict.

1. Start the gateway (prewarm of the tiny llama.cpp model in the background) and *at once*
   refresh the schemas of a sample database with the bulk embedder: its batches fall back
   to the CPU while the prewarm holds the GPU.
2. With the GPU free, index the sample documents: batches run on the GPU, each under its
   own lease; once one has, a chat asks for the GPU through the API, waits for that batch
   ("Waiting for GPU..."), and the batches after it fall back to the CPU until it is done.

The guard's events then show whether the contract held (no two GPU operations overlapped,
every embedding batch ran under its own lease or fell back while the GPU was busy), and one
sentence says what would have run at once without the guard.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from .._events import GpuEvent, GpuStatus, Subscription
from ..embed._fallback import MODEL_LOADING_REASON
from ..index import VectorStore
from ..server import Runtime, create_app, open_runtime, running_server
from ..settings import (
    EmbeddingSettings,
    IndexSettings,
    LlmSettings,
    ServerSettings,
    Settings,
    SourceSettings,
)
from ._render import timeline_table
from ._samples import write_sample_database, write_sample_documents

__all__ = ["Verdict", "judge", "run_demo"]

_RELEASED = frozenset({GpuStatus.COMPLETED, GpuStatus.FAILED, GpuStatus.CANCELLED, GpuStatus.HUNG})
BULK_OPERATIONS = frozenset({"schema-refresh", "rag-indexing"})
# A tiny model's 8 tokens, after waiting for one embedding batch: a net, not a target.
_CHAT_TIMEOUT_S = 120.0


@dataclass(slots=True)
class Verdict:
    """What the events prove: overlaps found, and how the embedding batches ran."""

    overlaps: list[str] = field(default_factory=list)
    gpu_batches: int = 0
    cpu_batches: int = 0
    waits: int = 0
    unexplained: list[str] = field(default_factory=list)

    @property
    def good(self) -> bool:
        """No overlap, every batch accounted for, and there was at least one batch."""
        return (
            not self.overlaps and not self.unexplained and (self.gpu_batches + self.cpu_batches) > 0
        )


def judge(events: list[GpuEvent]) -> Verdict:
    """Check the guard's events, in publication order.

    A ``started`` while another lease is held is an overlap. A bulk batch is explained when
    it ran under its own lease (``started``) or fell back to the CPU while someone held or
    waited for the GPU (``fallback`` naming a holder, or a queue), or while the GPU
    embedding model was still waiting for the lease to load.
    """
    verdict = Verdict()
    holding: dict[int, str] = {}
    waited: set[int] = set()
    for event in events:
        if event.status is GpuStatus.STARTED:
            if holding:
                others = ", ".join(holding.values())
                verdict.overlaps.append(f"{event.operation} started while {others} held the GPU")
            holding[event.lease_id] = event.operation
            if event.operation in BULK_OPERATIONS:
                verdict.gpu_batches += 1
        elif event.status in _RELEASED:
            holding.pop(event.lease_id, None)
        elif event.status is GpuStatus.WAITING and event.lease_id not in waited:
            waited.add(event.lease_id)
            verdict.waits += 1
        elif event.status is GpuStatus.FALLBACK and event.operation in BULK_OPERATIONS:
            verdict.cpu_batches += 1
            explained = event.holder or holding or "queued" in event.detail
            if not (explained or MODEL_LOADING_REASON in event.detail):
                verdict.unexplained.append(f"{event.operation} fell back with the GPU free")
    return verdict


def demo_settings(data_dir: Path, port: int) -> Settings:
    """Embedded defaults, whatever the environment says.

    In-process llama.cpp on a generated tiny model, the bundled embedding model, the store
    under ``data_dir``.
    """
    return Settings(
        data_dir=data_dir,
        server=ServerSettings(host="127.0.0.1", port=port),
        llm=LlmSettings(backend="llama-cpp"),
        embeddings=EmbeddingSettings(batch_size=8),
        index=IndexSettings(store_path=data_dir / "index.db"),
        sources=SourceSettings(document_roots=[data_dir]),
    )


async def run_demo(console: Console, *, data_dir: Path, port: int, serve: bool) -> bool:
    """Run the scenario, print the timelines and the verdict, then serve unless told not to.

    First the start-up collision (prewarm and a schema refresh at once), then, with the GPU
    free, the sample documents indexed while a chat asks for the GPU. Returns True on a good
    verdict.
    """
    settings = demo_settings(data_dir, port)
    database_url = await asyncio.to_thread(write_sample_database, data_dir / "sample-shop.sqlite")
    documents = await asyncio.to_thread(write_sample_documents, data_dir / "documents")
    console.print(
        "[bold]gpuguard demo[/]: in-process llama.cpp on a generated tiny random-weight model "
        "[yellow](its output is meaningless)[/], a sample SQLite database, sample documents."
    )
    async with open_runtime(settings, start=False) as runtime:
        gateway = runtime.gateway
        # A fresh store each run, so that every table and file is embedded (no "unchanged").
        await asyncio.to_thread(_forget_indexed, runtime.store)
        # Only the CPU model loads up front: the GPU one loads under the lease during the
        # scenario, as an app's start-up does, where the LLM prewarm and the embedding-model
        # load used to collide.
        console.print("loading the CPU embedding model...")
        await runtime.bulk.pair.start_cpu()
        with gateway.events.subscribe(kinds={"gpu"}, maxsize=10_000) as recorder:
            console.print("1. start: prewarm in the background, and at once refresh the schemas")
            await gateway.start()
            job = await runtime.jobs.start_schema_refresh(database_url)
            refreshed = await runtime.jobs.manager.wait(job.id)
            if gateway.prewarm_task is not None:
                await gateway.prewarm_task
            first = [e for e in recorder.drain() if isinstance(e, GpuEvent)]
        _print_timeline(console, first, "1. start-up: prewarm and schema refresh at once")
        app = create_app(
            settings, gateway=gateway, retriever=runtime.context().retriever, jobs=runtime.jobs
        )
        async with running_server(app, port=port if serve else 0) as url:
            console.print("2. the GPU is free: index the documents, and a chat asks for the GPU")
            second, indexed, waited = await _index_while_chatting(runtime, url, documents)
            _print_timeline(console, second, "2. indexing while a chat asks for the GPU")
            if waited:
                console.print(f"   the chat was told: [yellow]{waited}[/]")
            verdict = judge([*first, *second])
            jobs: list[tuple[str, str, str]] = [(refreshed.job, refreshed.status, refreshed.detail)]
            jobs.append((indexed.job, indexed.status, indexed.detail))
            _print_verdict(console, verdict, jobs)
            good = verdict.good and verdict.gpu_batches > 0
            good = good and all(status == "completed" for _, status, _ in jobs)
            if serve:
                console.print(
                    f"\nweb page: [bold]{app.state.access.login_url(url)}[/]  (a link that "
                    f"works once; index the sample documents from it: "
                    f"{documents.resolve()}); Ctrl-C to stop",
                    soft_wrap=True,
                )
                await _forever()
    return good


async def _index_while_chatting(
    runtime: Runtime, url: str, documents: Path
) -> tuple[list[GpuEvent], Any, str]:
    """Load the GPU embedder, index ``documents``, and once a batch runs on the GPU, chat.

    Returns the phase's GPU events, the job's end and the chat's waiting notice (if any).
    """
    events = runtime.gateway.events
    with (
        events.subscribe(kinds={"gpu"}, maxsize=10_000) as recorder,
        events.subscribe(kinds={"gpu"}, maxsize=10_000) as watch,
    ):
        # The GPU is free: the GPU embedding model loads under the lease, before the job.
        await runtime.bulk.pair.load_gpu(runtime.bulk.guard)
        job = await runtime.jobs.start_rag(documents)
        ended = asyncio.ensure_future(runtime.jobs.manager.wait(job.id))
        on_gpu = asyncio.ensure_future(_first_gpu_batch(watch))
        await asyncio.wait([ended, on_gpu], return_when=asyncio.FIRST_COMPLETED)
        on_gpu.cancel()
        waited = await _chat(url, runtime.gateway.model or "")
        finished = await ended
        return [e for e in recorder.drain() if isinstance(e, GpuEvent)], finished, waited


async def _first_gpu_batch(watch: Subscription) -> None:
    async for event in watch:
        if not isinstance(event, GpuEvent):
            continue
        if event.status is GpuStatus.STARTED and event.operation in BULK_OPERATIONS:
            return


async def _chat(url: str, model: str) -> str:
    """One short streamed chat through the API, as a client sends it; its waiting notice."""
    body = {"model": model, "stream": True, "max_tokens": 8}
    body["messages"] = [{"role": "user", "content": "Which tables hold the orders?"}]
    notice = ""
    async with (
        httpx.AsyncClient(timeout=_CHAT_TIMEOUT_S) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                extra = json.loads(line[6:]).get("gpuguard")
                notice = notice or (extra or {}).get("message", "")
    return str(notice)


def _print_timeline(console: Console, events: list[GpuEvent], title: str) -> None:
    console.print(timeline_table([e.to_dict() for e in events], title=title))
    gave_way = any(e.operation == "embed-load" and e.status is GpuStatus.CANCELLED for e in events)
    if gave_way:
        console.print(
            "   (embed-load cancelled: the GPU embedding model's load gave way, because the job "
            "had finished on the CPU meanwhile; nothing failed)"
        )


def _forget_indexed(store: VectorStore) -> None:
    for kind in ("schema", "document"):
        store.remove_sources(kind, store.source_hashes(kind))


def _print_verdict(console: Console, verdict: Verdict, jobs: list[tuple[str, str, str]]) -> None:
    ok, bad = "[green]PASS[/]", "[red]FAIL[/]"
    for name, status, detail in jobs:
        console.print(f"{name}: {status} ({detail})")
    overlap_line = "no overlapping GPU operations"
    console.print(f"{bad if verdict.overlaps else ok} {overlap_line}")
    for overlap in verdict.overlaps:
        console.print(f"   {overlap}")
    batches = (
        f"every embedding batch either ran under its own GPU lease ({verdict.gpu_batches}) "
        f"or fell back to the CPU while the GPU was busy ({verdict.cpu_batches})"
    )
    console.print(f"{bad if verdict.unexplained or not verdict.gpu_batches else ok} {batches}")
    for problem in verdict.unexplained:
        console.print(f"   {problem}")
    console.print(prevented(verdict))
    console.print(f"verdict: {'[bold green]GOOD[/]' if verdict.good else '[bold red]BAD[/]'}")


def prevented(verdict: Verdict) -> str:
    """One sentence: what would have run at once on the GPU without the guard."""
    return (
        f"without the guard: {verdict.cpu_batches} embedding batch(es) and {verdict.waits} "
        "queued operation(s) would have run on the GPU beside the one holding it, the "
        "contention that evicts a model mid-answer, hangs operations and grows memory "
        "without bound"
    )


async def _forever() -> None:
    import asyncio

    await asyncio.Event().wait()
