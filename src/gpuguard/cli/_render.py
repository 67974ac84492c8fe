"""Rich renderings of the GPU lane and of GPU events, shared by ``status`` and ``demo``."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["event_row", "lane_view", "timeline_table"]

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
    snapshot = gpu["snapshot"]
    current = gpu.get("current")
    holder = (
        Text(
            f"{current['operation']} {current.get('model') or ''} "
            f"({current['priority']}, {current['held_s']:.1f}s)",
            style="bold blue",
        )
        if current
        else Text("free", style="green")
    )
    queue = Table.grid(padding=(0, 2))
    for priority in ("interactive", "normal", "background"):
        waiting = [
            f"#{w['position']} {w['operation']}"
            for w in snapshot["waiters"]
            if w["priority"] == priority
        ]
        queue.add_row(Text(priority, style="dim"), ", ".join(waiting) or "-")
    counters = snapshot["counters"]
    summary = "  ".join(
        f"{name} {counters[name]}" for name in ("completed", "waited", "failed", "hung", "rejected")
    )
    body = Group(Text.assemble("holder  ", holder), queue, Text(summary, style="dim"))
    return Panel(body, title=f"GPU lane: {snapshot['guard']} ({snapshot['policy']})")


def event_row(event: dict[str, Any], start: float) -> tuple[str, str, Text, str, str]:
    """One timeline row: seconds since ``start``, operation, status, model, device/detail."""
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
