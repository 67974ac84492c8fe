"""Ollama's ``options``, ``format`` and ``tools`` as the gateway's chat options: one mapping.

:func:`chat_parameters` turns them into :class:`~gpuguard.llm.ChatOptions`, which the
backend then forwards or refuses by name: OpenAI's options and llama.cpp's samplers are
forwarded (:data:`FORWARDED_OPTIONS`), the options that size or place the model are the
server's to decide (:data:`SERVER_OPTIONS`), options llama.cpp no longer has are refused
with the reason (:data:`REMOVED_OPTIONS`), and any other option is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .._exceptions import InvalidRequest, UnsupportedParameter
from ..llm import ChatOptions
from ..llm.ollama import OPTION_NAMES
from ._openai_schemas import ToolSpec

__all__ = [
    "FORWARDED_OPTIONS",
    "OLLAMA_NAMES",
    "REMOVED_OPTIONS",
    "SERVER_OPTIONS",
    "ChatParameters",
    "chat_parameters",
]

#: Options that size or place the model when it is loaded. The server's own configuration
#: decides those (as Ollama's does for a model that is already loaded), so they are accepted,
#: reported back in the ``X-Gpuguard-Ignored-Options`` header, and change nothing.
SERVER_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "num_thread",
        "numa",
        "use_mmap",
        "use_mlock",
        "vocab_only",
    }
)


#: Ollama's generation options that the gateway forwards, with the :class:`ChatOptions` field
#: each becomes: OpenAI's options and llama.cpp's samplers. A backend that cannot honour one
#: refuses it by its Ollama name (embedded llama.cpp and llama-server take them all, but
#: ``num_keep`` embedded).
FORWARDED_OPTIONS = {
    **{ollama: field for field, ollama in OPTION_NAMES.items()},
    "stop": "stop",
}

#: Options llama.cpp no longer has, refused with the reason (Ollama's engine ignores them).
REMOVED_OPTIONS = {
    "tfs_z": "tail-free sampling was removed from llama.cpp",
    "penalize_newline": "llama.cpp no longer exempts newlines from the repeat penalty",
}

#: The Ollama name of each :class:`ChatOptions` field, for refusals in the client's terms.
OLLAMA_NAMES = {
    **{name: f"options.{option}" for option, name in FORWARDED_OPTIONS.items()},
    "response_format": "format",
    "tools": "tools",
}


@dataclass(frozen=True, slots=True)
class ChatParameters:
    """What a chat or generate request asks of the gateway beyond its messages.

    ``options`` go to :meth:`~gpuguard.gateway.ModelGateway.chat`; ``ignored`` names the
    :data:`SERVER_OPTIONS` that were sent.
    """

    options: ChatOptions = field(default_factory=ChatOptions)
    ignored: tuple[str, ...] = ()

    def in_ollama_terms(self, refusal: UnsupportedParameter) -> UnsupportedParameter:
        """A backend's refusal of a :class:`ChatOptions` field, naming the Ollama field."""
        name = OLLAMA_NAMES.get(refusal.param, refusal.param)
        why = str(refusal).removeprefix(refusal.param).lstrip()
        return UnsupportedParameter(name, why, backend=refusal.backend, model=refusal.model)


def chat_parameters(
    options: dict[str, Any] | None,
    *,
    format: str | dict[str, Any] | None = None,
    tools: list[ToolSpec] | None = None,
) -> ChatParameters:
    """Map Ollama ``options``, ``format`` and ``tools`` onto the gateway's chat options.

    :data:`FORWARDED_OPTIONS` pass through (``num_predict`` negative or 0: no limit, as in
    Ollama); :data:`SERVER_OPTIONS` are accepted and ignored; any other option set to a
    value raises :class:`InvalidRequest` naming it. ``format`` ``"json"`` asks for JSON
    mode and a JSON schema object for answers following it.
    """
    given = {key: value for key, value in (options or {}).items() if value is not None}
    ignored = tuple(sorted(key for key in given if key in SERVER_OPTIONS))
    for key in sorted(set(given) & set(REMOVED_OPTIONS)):
        raise InvalidRequest(f"options.{key}", f"is not supported: {REMOVED_OPTIONS[key]}")
    unsupported = sorted(set(given) - SERVER_OPTIONS - set(FORWARDED_OPTIONS))
    if unsupported:
        raise InvalidRequest(", ".join(f"options.{key}" for key in unsupported))
    fields = {
        FORWARDED_OPTIONS[key]: _CHECKS[key](f"options.{key}", value)
        for key, value in given.items()
        if key in FORWARDED_OPTIONS
    }
    chat = ChatOptions(
        **fields,
        response_format=_response_format(format),
        tools=tuple(tool.model_dump(exclude_none=True) for tool in tools or ()),
    )
    return ChatParameters(chat, ignored)


def _token_limit(name: str, value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"must be an integer, got {value!r}")
    return value if value > 0 else None


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(name, f"must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidRequest(name, f"must be {bounds}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidRequest(name, f"must be {bounds}, got {value!r}")
    return value


def _stops(name: str, value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(stop, str) and stop for stop in stops):
        raise InvalidRequest(name, f"must be a list of non-empty strings, got {value!r}")
    return tuple(stops)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "num_predict": _token_limit,
    "temperature": partial(_number, low=0.0),
    "top_p": partial(_number, low=0.0, high=1.0),
    "stop": _stops,
    "seed": _integer,
    "presence_penalty": _number,
    "frequency_penalty": _number,
    "top_k": partial(_integer, low=0),
    "min_p": partial(_number, low=0.0, high=1.0),
    "typical_p": partial(_number, low=0.0, high=1.0),
    "repeat_penalty": partial(_number, low=0.0),
    "repeat_last_n": partial(_integer, low=-1),
    "mirostat": partial(_integer, low=0, high=2),
    "mirostat_tau": partial(_number, low=0.0),
    "mirostat_eta": partial(_number, low=0.0),
    "num_keep": partial(_integer, low=-1),
}


def _response_format(format: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Ollama's ``format`` as an OpenAI ``response_format``."""
    if not format:
        return None
    if format == "json":
        return {"type": "json_object"}
    if isinstance(format, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": format}}
    raise InvalidRequest("format", f'must be "json" or a JSON schema object, got {format!r}')
