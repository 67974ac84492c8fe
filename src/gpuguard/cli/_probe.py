"""Who answered instead of gpuguard: the sentence a 404 from a wrong ``--url`` deserves.

A command that gets "404 Not Found" from a route every gpuguard server has was pointed at
something else: Ollama (its port 11434), gpuguard's own Ollama port, or the right server
under a path (``.../v1``). :func:`stranger` asks the answering server a few cheap questions
and says which.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .._redact import escape_control

__all__ = ["stranger"]

_PROBE_TIMEOUT_S = 3.0


def stranger(url: str, headers: dict[str, str]) -> str | None:
    """What answers at ``url`` when it is not a gpuguard server's root; None when it is."""
    with httpx.Client(headers=headers, timeout=_PROBE_TIMEOUT_S) as http:
        if _is_gpuguard(http, url):
            return None
        version = _json(http, f"{url}/api/version")
        if isinstance(version.get("gpuguard"), str):
            return (
                f"{url} is gpuguard's Ollama port, which serves only the Ollama API (/api/...); "
                "pass the main port (server.port, default 8765) as --url"
            )
        if isinstance(version.get("version"), str):
            return (
                f"{url} is an Ollama server (version {escape_control(version['version'][:40])}), "
                "not gpuguard; pass gpuguard's port (server.port, default 8765) as --url"
            )
        parts = urlsplit(url)
        if parts.path not in ("", "/"):
            root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
            if _is_gpuguard(http, root):
                return f"gpuguard answers at {root}, not under {parts.path}: pass --url {root}"
        return f"what answers at {url} is not a gpuguard server; pass gpuguard's URL as --url"


def _is_gpuguard(http: httpx.Client, url: str) -> bool:
    """``/health`` names the server: open to every caller, unlike the API description."""
    return _json(http, f"{url}/health").get("server") == "gpuguard"


def _json(http: httpx.Client, url: str) -> dict[str, Any]:
    """The JSON object at ``url``, or ``{}`` for anything else (an error, text, no answer)."""
    try:
        response = http.get(url)
        body = response.json() if response.is_success else {}
    except (httpx.HTTPError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}
