"""Building blocks of the settings: strict sections, per-model settings, clear errors.

An error names the offending key and suggests the nearest valid one.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._environment import PREFIX, section_spelling

__all__ = ["ModelSettings", "Section", "describe_errors", "section_names"]


class Section(BaseModel):
    """A settings section: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ModelSettings(Section):
    """One ``[models."NAME"]`` section: a model the server offers under ``NAME``.

    ``id`` is what the backend calls it (default: ``NAME``); for ``llama-cpp`` ``path`` is
    its GGUF file. Requests may use ``NAME`` or any of ``aliases``. ``context_size`` is the
    context in tokens (llama-cpp loads with it; for a remote server it tells retrieval how
    much room there is). ``gpu_layers`` is llama-cpp's layer offload. ``prewarm`` loads the
    model (under the GPU lease) when the server starts. ``ttl_s`` unloads it (under the
    lease) once unused that long; ``None`` keeps it loaded. ``priority`` is the GPU lease
    priority of its chats (``interactive`` by default; ``background`` for a batch model that
    should yield to people). ``vram_mb`` is the GPU memory the budget policy counts for it,
    over any measured footprint (``None``: measured on its first load, predicted from the
    GGUF header until then). ``gpu`` pins it to that GPU of ``[guard] gpus`` (NVML index):
    its loads, unloads and chats take that GPU's lease, and the in-process llama.cpp loads
    it there; ``None`` places it on the GPU with room at its first load.
    """

    id: str | None = Field(default=None, min_length=1)
    path: Path | None = None
    aliases: list[str] = Field(default_factory=list)
    context_size: int | None = Field(default=None, ge=16)
    gpu_layers: int | None = Field(default=None, ge=-1)
    prewarm: bool = False
    ttl_s: float | None = Field(default=None, gt=0)
    priority: Literal["interactive", "normal", "background"] = "interactive"
    vram_mb: int | None = Field(default=None, ge=0)
    gpu: int | None = Field(default=None, ge=0)


def describe_errors(exc: ValidationError, root: type[BaseModel]) -> str:
    """One message for every problem, with "did you mean" for a misspelt key."""
    problems = []
    for error in exc.errors():
        location = error["loc"]
        where = ".".join(str(part) for part in location) or "settings"
        if error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown setting{_suggestion(root, location)}")
        else:
            problems.append(f"{where}: {error['msg']}")
    return "invalid settings: " + "; ".join(problems)


def _suggestion(root: type[BaseModel], location: tuple[int | str, ...]) -> str:
    fields = _fields_at(root, location[:-1])
    if not fields:
        return ""
    key = str(location[-1]).replace("-", "_").lower()
    if len(location) == 1:
        spelling = section_spelling(key, section_names(root))
        if spelling is not None:
            return f"; did you mean {spelling} (or {_toml_spelling(spelling)} in a TOML file)?"
    nearest = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if nearest:
        return f"; did you mean {nearest[0]!r}?"
    return f"; valid keys here: {', '.join(sorted(fields))}"


def section_names(root: type[BaseModel]) -> list[str]:
    """The top-level keys that are sections (a table of keys), not plain values."""
    return [
        name
        for name, field in root.model_fields.items()
        if _is_section(field.annotation) or _is_model_dict(field.annotation)
    ]


def _toml_spelling(variable: str) -> str:
    section, _, key = variable.removeprefix(PREFIX).partition("__")
    return f"[{section.lower()}] {key.lower()}"


def _fields_at(root: type[BaseModel], path: tuple[int | str, ...]) -> list[str]:
    """The valid keys of the section at ``path`` (the keys of ``[models]`` are names)."""
    current: Any = root
    for part in path:
        if _is_model_dict(current):
            current = current.__args__[1]  # ``part`` is a model's name
            continue
        if not _is_section(current):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = field.annotation
    return list(current.model_fields) if _is_section(current) else []


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_model_dict(annotation: Any) -> bool:
    args = getattr(annotation, "__args__", ())
    return getattr(annotation, "__origin__", None) is dict and len(args) == 2
