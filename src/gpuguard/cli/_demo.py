"""``gpuguard demo``: the start-up scenario on embedded defaults, its timeline and its verdict.

Start the gateway (prewarm of the tiny llama.cpp model in the background) and *at once*
refresh the schemas of a sample database with the bulk embedder. The guard's events then
show whether the contract held: no two GPU operations overlapped, and every embedding batch
either ran under its own GPU lease or fell back to the CPU while the GPU was busy.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from .._events import GpuEvent, GpuStatus
from ..embed._fallback import MODEL_LOADING_REASON
from ..index import VectorStore
from ..server import create_app, open_runtime, running_server
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


@dataclass(slots=True)
class Verdict:
    """What the events prove: overlaps found, and how the embedding batches ran."""

    overlaps: list[str] = field(default_factory=list)
    gpu_batches: int = 0
    cpu_batches: int = 0
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
    """Run the scenario, print the timeline and the verdict, then serve unless told not to.

    Returns True on a good verdict.
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
        # A fresh store each run, so that every table is embedded (no "unchanged" skips).
        await asyncio.to_thread(_forget_schemas, runtime.store)
        # Only the CPU model loads up front: the GPU one loads under the lease during the
        # scenario, as an app's start-up does, where the LLM prewarm and the embedding-model
        # load used to collide.
        console.print("loading the CPU embedding model...")
        await runtime.bulk.pair.start_cpu()
        with gateway.events.subscribe(kinds={"gpu"}, maxsize=10_000) as recorder:
            console.print("start: prewarm in the background, and at once refresh the schemas")
            await gateway.start()
            job = await runtime.jobs.start_schema_refresh(database_url)
            finished = await runtime.jobs.manager.wait(job.id)
            if gateway.prewarm_task is not None:
                await gateway.prewarm_task
            events = [e for e in recorder.drain() if isinstance(e, GpuEvent)]
        console.print(timeline_table([e.to_dict() for e in events]))
        verdict = judge(events)
        _print_verdict(console, verdict, finished.status, finished.detail)
        good = verdict.good and finished.status == "completed"
        if serve:
            app = create_app(
                settings,
                gateway=gateway,
                retriever=runtime.context().retriever,
                jobs=runtime.jobs,
            )
            async with running_server(app, port=port) as url:
                console.print(
                    f"\nweb page: [bold]{app.state.access.login_url(url)}[/]  (a link that "
                    f"works once; index the sample documents from it: "
                    f"{documents.resolve()}); Ctrl-C to stop",
                    soft_wrap=True,
                )
                await _forever()
    return good


def _forget_schemas(store: VectorStore) -> None:
    store.remove_sources("schema", store.source_hashes("schema"))


def _print_verdict(console: Console, verdict: Verdict, job_status: str, detail: str) -> None:
    ok, bad = "[green]PASS[/]", "[red]FAIL[/]"
    console.print(f"schema refresh: {job_status} ({detail})")
    overlap_line = "no overlapping GPU operations"
    console.print(f"{bad if verdict.overlaps else ok} {overlap_line}")
    for overlap in verdict.overlaps:
        console.print(f"   {overlap}")
    batches = (
        f"every embedding batch either ran under its own GPU lease ({verdict.gpu_batches}) "
        f"or fell back to the CPU while the GPU was busy ({verdict.cpu_batches})"
    )
    console.print(f"{bad if verdict.unexplained else ok} {batches}")
    for problem in verdict.unexplained:
        console.print(f"   {problem}")
    console.print(f"verdict: {'[bold green]GOOD[/]' if verdict.good else '[bold red]BAD[/]'}")


async def _forever() -> None:
    import asyncio

    await asyncio.Event().wait()
