"""Rich renderings shared by the commands: the GPU lane, status, ps, and the event timeline."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

__all__ = [
    "event_row",
    "gpu_lines",
    "holder_text",
    "jobs_lines",
    "lane_view",
    "model_size",
    "processor_text",
    "ps_rows",
    "ps_table",
    "queue_text",
    "size_text",
    "status_view",
    "timeline_table",
    "until_text",
    "waiter_text",
    "watch_line",
]

_STATUS_STYLE = {
    "started": "blue",
    "completed": "green",
    "waiting": "yellow",
    "fallback": "magenta",
    "failed": "red",
    "hung": "bold red",
    "timed_out": "red",
    "rejected": "red",
    "cancelled": "dim",
}


def lane_view(gpu: dict[str, Any]) -> Panel:
    """The holder, the queue by priority and the counters, from ``GET /admin/gpu``."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    snapshot = gpu["snapshot"]
    current = gpu.get("current") or snapshot.get("holder")
    holder = Text(holder_text(current), style="bold blue" if current else "green")
    queue = Table.grid(padding=(0, 2))
    for priority in ("interactive", "normal", "background"):
        waiting = [waiter_text(w) for w in snapshot["waiters"] if w["priority"] == priority]
        queue.add_row(Text(priority, style="dim"), Text(", ".join(waiting) or "-"))
    counters = snapshot["counters"]
    summary = "  ".join(
        f"{name} {counters[name]}" for name in ("completed", "waited", "failed", "hung", "rejected")
    )
    body = Group(Text.assemble("holder  ", holder), queue, Text(summary, style="dim"))
    scope = f", {snapshot['scope']}" if snapshot.get("scope") else ""
    return Panel(body, title=f"GPU lane: {snapshot['guard']} ({snapshot['policy']}{scope})")


def event_row(event: dict[str, Any], start: float) -> tuple[str, str, Text, str, str]:
    """One timeline row: seconds since ``start``, operation, status, model, device/detail."""
    from rich.text import Text

    status = event["status"]
    device = ""
    if status == "fallback":
        device = "cpu"
    elif event.get("priority") == "background" and status == "started":
        device = "gpu"
    return (
        f"{event['timestamp'] - start:7.3f}",
        event["operation"],
        Text(status, style=_STATUS_STYLE.get(status, "")),
        # "sentence-transformers/all-MiniLM-L6-v2" -> "all-MiniLM-L6-v2": the name that matters.
        (event.get("model") or "").rsplit("/", 1)[-1],
        device or (f"held by {event['holder']}" if event.get("holder") else ""),
    )


def timeline_table(events: list[dict[str, Any]], *, title: str = "Timeline") -> Table:
    """GPU events as a table: time (s), operation, status, model, device or holder."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("t (s)", justify="right", no_wrap=True, min_width=7)
    table.add_column("operation", overflow="fold")
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("model", no_wrap=True)
    table.add_column("device / holder", overflow="fold")
    start = events[0]["timestamp"] if events else time.time()
    for event in events:
        table.add_row(*event_row(event, start))
    return table


# --- models, ps and status ------------------------------------------------------------------
_HOLDER_FIELDS = frozenset(
    {"lease_id", "operation", "model", "priority", "since", "held_s", "hung", "hung_s"}
)
_WAITER_FIELDS = _HOLDER_FIELDS | {"effective_priority", "position", "waited_s"}


def size_text(value: int | None) -> str:
    """``1.3 GB``, or ``-`` when unknown."""
    if not value:
        return "-"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" or size >= 10 else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def processor_text(size: int | None, vram: int | None) -> str:
    """Where a loaded model runs, as ``ollama ps`` says it: ``100% GPU``, ``25%/75% CPU/GPU``."""
    if vram is None:
        return "-"
    if not size or vram >= size:
        return "100% GPU" if vram else "100% CPU"
    gpu = round(100 * vram / size)
    return "100% CPU" if gpu == 0 else f"{100 - gpu}%/{gpu}% CPU/GPU"


def model_size(loaded: dict[str, Any] | None) -> int | None:
    """A loaded model's size in bytes, where its backend reports one."""
    details = (loaded or {}).get("details") or {}
    size = details.get("size") or details.get("size_bytes")
    return int(size) if isinstance(size, int | float) else None


def extra_fields(info: dict[str, Any], known: frozenset[str]) -> str:
    """Fields a newer server adds to a holder or waiter (``pid 41, host gpu-box``)."""
    extra = [
        f"{key.replace('_', ' ')} {'yes' if value is True else value}"
        for key, value in info.items()
        if key not in known
        and value not in (None, False, "")
        and not isinstance(value, dict | list)
    ]
    return ", ".join(extra)


def holder_text(holder: dict[str, Any] | None) -> str:
    """``chat fake-llm (interactive, 1.2 s)`` or ``free``."""
    if not holder:
        return "free"
    model = f" {holder['model']}" if holder.get("model") else ""
    facts = [str(holder["priority"]), f"{holder.get('held_s', 0):.1f} s"]
    if holder.get("hung_s") is not None:
        facts.append(f"HUNG for {holder['hung_s']:.0f} s")
    if extra := extra_fields(holder, _HOLDER_FIELDS):
        facts.append(extra)
    return f"{holder['operation']}{model} ({', '.join(facts)})"


def waiter_text(waiter: dict[str, Any]) -> str:
    """``#1 chat``, with what a wider scope adds: ``#1 train (pid 41, host gpu-box, ...)``."""
    extra = extra_fields(waiter, _WAITER_FIELDS)
    return f"#{waiter['position']} {waiter['operation']}" + (f" ({extra})" if extra else "")


def queue_text(waiters: list[dict[str, Any]]) -> str:
    """``interactive: #1 chat; normal: -; background: -``."""
    parts = []
    for priority in ("interactive", "normal", "background"):
        names = [waiter_text(w) for w in waiters if w.get("priority") == priority]
        parts.append(f"{priority}: {', '.join(names) or '-'}")
    return "; ".join(parts)


def gpu_lines(gpus: list[dict[str, Any]]) -> list[str]:
    """One line per GPU where there are several (none for one: its lane says it all).

    ``gpu1  budget  budget 151 GB  free 120 GB  holders chat m (interactive, 1.2 s)  waiting
    #1 embed, #2 train``; the memory figures only where the policy reads them.
    """
    if len(gpus) < 2:
        return []
    lines = []
    for gpu in gpus:
        parts = [_gpu_name(gpu), str(gpu.get("policy")), *_memory_parts(gpu)]
        held = ", ".join(holder_text(holder) for holder in _holders(gpu)) or "free"
        waiting = ", ".join(waiter_text(waiter) for waiter in gpu.get("waiters", []))
        parts.append(f"holders {held}" + (f"  waiting {waiting}" if waiting else ""))
        lines.append("  ".join(parts))
    return lines


def watch_line(state: dict[str, Any]) -> tuple[str, str]:
    """A piped ``status --watch`` line for ``state``, and the key whose change prints anew.

    One GPU: ``holder H | queue Q | jobs J``. Several: ``NAME holder H | queue Q`` for each
    GPU (``NAME budget B free F`` where its policy reads memory), then ``jobs J``. The key
    leaves out what moves at every refresh: held times and memory figures.
    """
    running = [job for job in state.get("jobs", []) if job.get("status") == "running"]
    gpus = state.get("gpus", [])
    if len(gpus) > 1:
        lanes = [(f"{' '.join([_gpu_name(gpu), *_memory_parts(gpu)])} ", gpu) for gpu in gpus]
        held = [_holders(gpu) for gpu in gpus]
    else:
        snapshot = state["gpu"]
        holder = state.get("current") or snapshot.get("holder")
        lanes, held = [("", snapshot)], [[holder] if holder else []]
    texts, keys = [], []
    for (name, gpu), holders in zip(lanes, held, strict=True):
        queue = queue_text(gpu.get("waiters", []))
        holding = ", ".join(holder_text(holder) for holder in holders) or "free"
        texts.append(f"{name}holder {holding} | queue {queue}")
        keys.append(f"{[(h['operation'], h.get('model')) for h in holders]} {queue}")
    jobs = "; ".join(jobs_lines(running)) or "none"
    return " | ".join([*keys, jobs]), " | ".join([*texts, f"jobs {jobs}"])


def _gpu_name(gpu: dict[str, Any]) -> str:
    return str(gpu.get("gpu") or gpu.get("guard"))


def _memory_parts(gpu: dict[str, Any]) -> list[str]:
    """``budget 151 GB``, ``free 120 GB`` where the GPU's policy reads its memory."""
    memory = gpu.get("memory")
    if not memory:
        return []
    return [
        f"budget {size_text(memory.get('budget_bytes'))}",
        f"free {size_text(memory.get('free_bytes'))}",
    ]


def _holders(gpu: dict[str, Any]) -> list[dict[str, Any]]:
    """A GPU snapshot's holders (an older server's: its one ``holder``)."""
    holders: list[dict[str, Any]] = gpu.get("holders") or (
        [gpu["holder"]] if gpu.get("holder") else []
    )
    return holders


def ps_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per loaded model: model, size, vram, processor, until."""
    rows = []
    for loaded in status.get("loaded", []):
        size = model_size(loaded)
        vram = loaded.get("vram_bytes")
        rows.append(
            {
                "model": loaded["id"],
                "size_bytes": size,
                "vram_bytes": vram,
                "processor": processor_text(size, vram),
                "until": (loaded.get("details") or {}).get("expires_at"),
                "current": loaded["id"] == status.get("model"),
            }
        )
    return rows


def until_text(expires_at: object, now: datetime | None = None) -> str:
    """When a backend lets a model go: ``in 4 min``, ``forever``, or ``-`` when it does not say."""
    if not isinstance(expires_at, str) or not expires_at:
        return "-"
    try:
        when = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return expires_at
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    left = (when - (now or datetime.now(UTC))).total_seconds()
    if left > 365 * 86400:  # Ollama's keep_alive -1: never unloaded
        return "forever"
    if left <= 0:
        return "now"
    return f"in {left:.0f} s" if left < 90 else f"in {left / 60:.0f} min"


def ps_table(rows: list[dict[str, Any]]) -> Table:
    """``gpuguard ps``: the loaded models, like ``ollama ps``."""
    from rich.table import Table

    table = Table("model", "size", "VRAM", "processor", "until", box=None, pad_edge=False)
    for row in rows:
        name = f"{row['model']} *" if row["current"] else row["model"]
        table.add_row(
            name,
            size_text(row["size_bytes"]),
            size_text(row["vram_bytes"]),
            row["processor"],
            until_text(row["until"]),
        )
    return table


def jobs_lines(jobs: list[dict[str, Any]]) -> list[str]:
    """``schema-refresh running 3/14  postgresql://app:***@db/shop`` per job."""
    lines = []
    for job in jobs:
        total = f"/{job['total']}" if job.get("total") else ""
        source = f"  {job['source']}" if job.get("source") else ""
        lines.append(f"{job.get('job', 'job')} {job['status']} {job.get('done', 0)}{total}{source}")
    return lines


def status_view(state: dict[str, Any]) -> Group:
    """``gpuguard status``: backend, current model, loaded models, running jobs, the lane."""
    from rich.console import Group
    from rich.text import Text

    backend = state["backend"]
    health = Text("ok", "green") if backend.get("ok") else Text("down", "red")
    loaded = ", ".join(m["id"] for m in state.get("loaded", [])) or "none"
    lines: list[Any] = [
        Text.assemble(
            "backend ",
            (str(backend.get("backend")), "bold"),
            " (",
            health,
            ")  model ",
            (str(state.get("model") or "none"), "bold"),
            f"  loaded {loaded}",
            ("  prewarming" if state.get("prewarming") else "", "yellow"),
        )
    ]
    lines += [Text(f"backend error: {error}", "red") for error in state.get("errors", [])]
    running = [job for job in state.get("jobs", []) if job.get("status") == "running"]
    lines.append(Text("jobs " + ("; ".join(jobs_lines(running)) or "none running")))
    lines.append(lane_view({"snapshot": state["gpu"], "current": state.get("current")}))
    lines += [Text(line) for line in gpu_lines(state.get("gpus", []))]
    return Group(*lines)
