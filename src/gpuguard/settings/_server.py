"""Part of ``[server]``: its bounds, and what callers may ask of an Ollama server.

Bounds against callers that hold what they do not use (connections, request heads, event
streams, a stream nobody reads); see docs/security.md.
"""

from __future__ import annotations

from pydantic import Field

from ._parts import Section

__all__ = ["ServerBounds"]


class ServerBounds(Section):
    """Connections, request heads, event streams and stalled readers; Ollama management."""

    max_connections: int = Field(
        default=512,
        ge=8,
        description="Open connections at most; beyond it the longest-idle one is closed "
        "(or, when every one is busy, the new one gets 503). Keep it under `ulimit -n`.",
    )
    request_head_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a connection may take to send a whole request head, counted "
        "from its connection or its request's first byte (slow-header attacks).",
    )
    max_event_subscribers: int = Field(
        default=64, ge=1, description="/events streams open at once (all callers)."
    )
    max_event_subscribers_per_client: int = Field(
        default=16, ge=1, description="/events streams open at once from one client address."
    )
    stalled_reader_s: float = Field(
        default=30.0,
        gt=0,
        description="A streamed answer whose reader takes nothing for this long is ended: its "
        "work stops and the GPU is freed; the connection is closed as long again later.",
    )
    ollama_registries: list[str] = Field(
        default_factory=lambda: ["registry.ollama.ai", "ollama.com", "hf.co"],
        description="Registries that /api/pull, /api/create and /api/copy may name.",
    )
    ollama_allow_insecure: bool = Field(
        default=False, description='Let /api/pull use "insecure": true (plain HTTP registries).'
    )
    ollama_allow_local_paths: bool = Field(
        default=False,
        description="Let /api/create name files on the Ollama host (modelfile, path, from a path).",
    )
