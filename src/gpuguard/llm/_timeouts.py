"""How long each kind of backend call may take."""

from __future__ import annotations

from dataclasses import dataclass

from .._exceptions import ConfigError

__all__ = ["Timeouts"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Each kind of wait, named apart (seconds; all must be positive).

    ``health_s`` is short so a dead server is reported quickly; ``load_s`` and
    ``unload_s`` are long because servers take minutes to load a large model; ``read_s``
    bounds the wait for the first token and between two streamed chunks; ``request_s``
    bounds every other call. ``abort_s`` bounds what :meth:`~gpuguard.llm.LlmBackend.abort`
    asks of the server after closing its requests (an unload, a wait for a slot to go
    idle). ``poll_interval_s`` paces the polling of servers whose load or
    unload is asynchronous (Ollama, llama-server's router).
    """

    connect_s: float = 5.0
    health_s: float = 5.0
    request_s: float = 30.0
    load_s: float = 900.0
    unload_s: float = 120.0
    read_s: float = 120.0
    abort_s: float = 30.0
    poll_interval_s: float = 0.25

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"Timeouts.{name} must be a positive number, got {value!r}")
