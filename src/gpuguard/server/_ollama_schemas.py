"""Request bodies of the Ollama-compatible routes, and ``keep_alive``.

Ollama ignores unknown top-level fields, and so do these models. A field that Ollama
defines but gpuguard cannot honour (``images``, ``suffix``, ``think``...) is refused with a
400 that names it, never dropped silently; :mod:`._ollama_options` is the one mapping of
``options``, ``format`` and ``tools`` onto the gateway's chat options.
"""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._exceptions import InvalidRequest
from ..llm import ChatMessage
from ._ollama_conversation import NO_IMAGES, OllamaMessage, conversation
from ._ollama_options import SERVER_OPTIONS, ChatParameters, chat_parameters
from ._openai_schemas import ToolSpec

__all__ = [
    "EmbedRequest",
    "EmbeddingsRequest",
    "GenerateRequest",
    "ModelNameRequest",
    "OllamaChatRequest",
    "keep_alive_seconds",
]

MAX_MESSAGES = 256
MAX_EMBEDDING_INPUTS = 2048

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


class ModelNamed(BaseModel):
    """A model named by ``model`` or, in older clients, ``name`` (one of them is required)."""

    model: str = Field(default="", max_length=256)
    name: str = Field(default="", max_length=256)

    @model_validator(mode="after")
    def _one_name(self) -> Self:
        if not (self.model or self.name):
            raise ValueError("model is required")
        return self

    @property
    def model_name(self) -> str:
        """The model named by the request."""
        return self.model or self.name


class ModelNameRequest(ModelNamed):
    """The model of ``/api/show``, ``/api/pull``, ``/api/delete``, ``/api/create``."""

    model_config = ConfigDict(extra="allow")

    stream: bool = True
    verbose: bool = False

    def forwarded(self) -> dict[str, Any]:
        """The body as Ollama documents it for ``/api/show``: nothing else is forwarded."""
        return {"model": self.model_name, "verbose": self.verbose}
