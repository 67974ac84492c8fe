"""Request bodies of the Ollama-compatible routes, ``keep_alive`` and ``options``.

Ollama ignores unknown top-level fields, and so do these models. A field that Ollama
defines but gpuguard cannot honour (``images``, ``suffix``, ``think``, ``top_k``...) is
refused with a 400 that names it, never dropped silently; :func:`chat_parameters` is the
one mapping of ``options``, ``format`` and ``tools`` onto the gateway's
:class:`~gpuguard.llm.ChatOptions`, which the backend then forwards or refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._exceptions import InvalidRequest, UnsupportedParameter
from ..llm import ChatMessage, ChatOptions
from ._ollama_conversation import NO_IMAGES, OllamaMessage, conversation
from ._openai_schemas import ToolSpec

__all__ = [
    "FORWARDED_OPTIONS",
    "OLLAMA_NAMES",
    "SERVER_OPTIONS",
    "ChatParameters",
    "CopyRequest",
    "EmbedRequest",
    "EmbeddingsRequest",
    "GenerateRequest",
    "ModelNameRequest",
    "OllamaChatRequest",
    "chat_parameters",
    "keep_alive_seconds",
]

MAX_MESSAGES = 256
MAX_EMBEDDING_INPUTS = 2048

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
#: each becomes. Every other option (``top_k``, ``min_p``, ``repeat_penalty``, ``mirostat``...)
#: has no counterpart in the backends' chat APIs and is refused by name.
FORWARDED_OPTIONS = {
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
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


def _seed(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"must be an integer, got {value!r}")
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
    "seed": _seed,
    "presence_penalty": _number,
    "frequency_penalty": _number,
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


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's ``keep_alive`` in seconds (``None`` when unset).

    A number of seconds or a Go duration (``"5m"``, ``"1h30m"``, ``"-1s"``); a string of
    digits counts as seconds. Negative means "keep loaded until unloaded".
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest("keep_alive", f"must be a number or a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise InvalidRequest("keep_alive", f'is not a valid duration: "{value}"')
    return sign * sum(float(number) * _UNIT_S[unit] for number, unit in parts)


class _OllamaRequest(BaseModel):
    """Shared by chat and generate: model, streaming, ``keep_alive``, ``options``, ``format``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    stream: bool = True
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None

    def check_supported(self) -> None:
        """Refuse what the gateway cannot do yet, naming the field."""
        if self.think:
            raise InvalidRequest("think")

    def parameters(self) -> ChatParameters:
        """The generation options asked for (see :func:`chat_parameters`)."""
        return chat_parameters(self.options, format=self.format)

    @property
    def keep_alive_s(self) -> float | None:
        """``keep_alive`` in seconds (``None`` when unset)."""
        return keep_alive_seconds(self.keep_alive)


class OllamaChatRequest(_OllamaRequest):
    """``POST /api/chat``; no messages loads the model (and ``keep_alive: 0`` unloads it)."""

    messages: list[OllamaMessage] = Field(default_factory=list, max_length=MAX_MESSAGES)
    tools: list[ToolSpec] | None = Field(default=None, max_length=128)

    def chat_messages(self) -> list[ChatMessage]:
        """The conversation in the gateway's terms (after :meth:`check_supported`)."""
        self.check_supported()
        return conversation(self.messages)

    def parameters(self) -> ChatParameters:
        """The generation options asked for, the tools included."""
        return chat_parameters(self.options, format=self.format, tools=self.tools)


class GenerateRequest(_OllamaRequest):
    """``POST /api/generate``; no prompt loads the model (and ``keep_alive: 0`` unloads it)."""

    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    images: list[str] | None = None
    template: str | None = None
    raw: bool = False
    context: list[int] | None = None

    def chat_messages(self) -> list[ChatMessage]:
        """The prompt (after the optional system message) as a conversation."""
        self.check_supported()
        if self.images:
            raise InvalidRequest("images", NO_IMAGES)
        for name in ("suffix", "template", "raw", "context"):
            if getattr(self, name):
                raise InvalidRequest(name)
        system = [ChatMessage("system", self.system)] if self.system else []
        return [*system, ChatMessage("user", self.prompt)]


class EmbedRequest(BaseModel):
    """``POST /api/embed``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field(max_length=MAX_EMBEDDING_INPUTS)
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1)
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None

    @property
    def texts(self) -> list[str]:
        """The inputs as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def check_supported(self) -> tuple[str, ...]:
        """Refuse by name what the embedders cannot do; return the ignored server options.

        Embedders truncate long inputs themselves.
        """
        keep_alive_seconds(self.keep_alive)
        if not self.truncate:
            raise InvalidRequest("truncate", "= false is not supported by this server yet")
        return _embedding_options(self.options)


class EmbeddingsRequest(BaseModel):
    """``POST /api/embeddings`` (the older, single-text form)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    prompt: str = ""
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None

    def check_supported(self) -> tuple[str, ...]:
        """As for ``/api/embed``."""
        keep_alive_seconds(self.keep_alive)
        return _embedding_options(self.options)


def _embedding_options(options: dict[str, Any] | None) -> tuple[str, ...]:
    given = {key for key, value in (options or {}).items() if value is not None}
    unsupported = sorted(given - SERVER_OPTIONS)
    if unsupported:
        raise InvalidRequest(", ".join(f"options.{key}" for key in unsupported))
    return tuple(sorted(given))


class ModelNameRequest(BaseModel):
    """The model of ``/api/show``, ``/api/pull``, ``/api/delete``, ``/api/create``.

    Named by ``model`` or, in older clients, ``name``.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(default="", max_length=256)
    name: str = Field(default="", max_length=256)
    stream: bool = True
    verbose: bool = False

    @model_validator(mode="after")
    def _one_name(self) -> ModelNameRequest:
        if not (self.model or self.name):
            raise ValueError("model is required")
        return self

    @property
    def model_name(self) -> str:
        """The model named by the request."""
        return self.model or self.name

    def forwarded(self) -> dict[str, Any]:
        """The body as Ollama expects it, unknown fields included."""
        body = self.model_dump(exclude={"name"}, exclude_defaults=False)
        body["model"] = self.model_name
        return body


class CopyRequest(BaseModel):
    """``POST /api/copy``."""

    source: str = Field(min_length=1, max_length=256)
    destination: str = Field(min_length=1, max_length=256)
