"""Settings for the server and the CLI, from a file and ``GPUGUARD_*`` environment variables.

Sources, strongest first: explicit arguments, environment variables (``GPUGUARD_LLM__BACKEND``:
prefix ``GPUGUARD_``, sections joined by ``__``), the file named by ``GPUGUARD_CONFIG`` (TOML,
or a ``.env`` file), the defaults. The defaults run everything embedded: llama.cpp in-process on
a generated tiny model, embeddings on this machine, the vector store under ``./.gpuguard/``.

:func:`load_settings` turns every invalid value into one :class:`~gpuguard.ConfigError` that
names the offending settings.
"""

from __future__ import annotations

import ipaddress
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .._exceptions import ConfigError
from ._environment import misnamed_variables
from ._guard import GuardSettings
from ._parts import ModelSettings, Section, describe_errors, section_names
from ._server import ServerBounds

__all__ = [
    "CONFIG_ENV_VAR",
    "EmbeddingSettings",
    "GuardSettings",
    "IndexSettings",
    "LlmSettings",
    "ModelSettings",
    "ServerSettings",
    "Settings",
    "SourceSettings",
    "is_loopback",
    "load_settings",
]

CONFIG_ENV_VAR = "GPUGUARD_CONFIG"
"""The environment variable naming an optional settings file (``.toml`` or ``.env``)."""

# The file given to load_settings(config=...), read by Settings.settings_customise_sources.
_config_file: ContextVar[Path | None] = ContextVar("gpuguard_config_file", default=None)

BackendKind = Literal[
    "llama-cpp", "foundry", "ollama", "llama-server", "vllm", "lmstudio", "openai", "fake"
]


class ServerSettings(ServerBounds):
    """Where the HTTP server listens and what it accepts (its bounds: :class:`ServerBounds`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    token: SecretStr | None = Field(
        default=None, description="Bearer token; required when host is not a loopback address."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    ollama_listen: bool = Field(
        default=False,
        description="Also serve the Ollama API on ollama_port (it is always under /api/ on port).",
    )
    ollama_port: int = Field(default=11434, ge=0, le=65535)
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Names besides localhost/127.0.0.1/[::1] (and the bind address) that the "
        "Host header may carry; needed beyond loopback (see docs/security.md).",
    )

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> ServerSettings:
        if not is_loopback(self.host) and not (self.token and self.token.get_secret_value()):
            raise ValueError(
                f"server.host={self.host!r} is reachable beyond this machine: set server.token "
                "(GPUGUARD_SERVER__TOKEN) so that the API requires a bearer token"
            )
        return self


class LlmSettings(Section):
    """The LLM backend: which server (or in-process runtime), where, and which model."""

    backend: BackendKind = "llama-cpp"
    base_url: str | None = None
    model: str | None = Field(
        default=None, description="Model id (llama-cpp names the model after its GGUF file)."
    )
    model_path: Path | None = Field(
        default=None,
        description="GGUF file for llama-cpp; default: a generated tiny model in the data dir.",
    )
    api_key: SecretStr | None = None
    n_gpu_layers: int = Field(default=-1, ge=-1)
    n_ctx: int | None = Field(
        default=None,
        ge=16,
        description="llama-cpp context size (default 4096).",
    )
    max_loaded_models: int | None = Field(
        default=None,
        ge=1,
        description="How many models may be loaded at once on each GPU; loading one more on "
        "a GPU first unloads that GPU's least recently used model, under its lease (default: "
        "1 per GPU for the embedded llama-cpp backend; no bound for LLM servers, which evict "
        "by their own rules).",
    )

    @property
    def loaded_models_bound(self) -> int | None:
        """``max_loaded_models``, or its default for this backend."""
        if self.max_loaded_models is not None:
            return self.max_loaded_models
        return 1 if self.backend == "llama-cpp" else None

    @model_validator(mode="after")
    def _remote_needs_model(self) -> LlmSettings:
        if self.backend not in ("llama-cpp", "fake") and not self.model:
            raise ValueError(f"llm.model is required for the {self.backend!r} backend")
        return self


class EmbeddingSettings(Section):
    """The GPU embedder (optional) and the CPU embedder that stands in for it when it is busy.

    Use the same model for both, so that their vectors are interchangeable. Engines:
    ``sentence-transformers``, ``fastembed``, ``remote`` (with ``url``), ``hash`` (tests), and
    for the CPU ``auto`` (the default: fastembed over an ONNX export where there is one).
    A local GPU engine runs in a worker process (``gpu_process``); the CPU one in-process.
    """

    gpu_engine: str | None = "sentence-transformers"
    gpu_model: str = "all-MiniLM-L6-v2"
    gpu_device: str = "auto"
    gpu_process: bool = Field(
        default=True,
        description="Run a local GPU embedder in a worker process, so that hung work can be "
        "killed (its memory, VRAM included, is freed by the OS).",
    )
    cpu_engine: str = Field(
        default="auto",
        description='"auto": fastembed (ONNX Runtime) where it and an export_onnx directory of '
        "cpu_model (cpu_model itself, or <data_dir>/onnx/<cpu_model>) are there, else "
        "sentence-transformers; the log says which runs.",
    )
    cpu_model: str = "all-MiniLM-L6-v2"
    url: str | None = Field(default=None, description="Base URL of a remote embedding engine.")
    batch_size: int = Field(default=32, ge=1, le=4096)
    query_max_texts: int = Field(
        default=8,
        ge=1,
        description="An API request of at most this many texts (and query_max_chars) is a "
        "query: it takes the GPU at interactive priority.",
    )
    query_max_chars: int = Field(default=4_000, ge=1)
    bulk_above_texts: int = Field(
        default=256,
        ge=1,
        description="An API request of more texts than this (or more characters than "
        "bulk_above_chars) is bulk: background priority per batch, CPU when the GPU is busy.",
    )
    bulk_above_chars: int = Field(default=200_000, ge=1)
    token_arrays: Literal["openai", "model"] = Field(
        default="openai",
        description='What the ids of token-array input to /v1/embeddings mean: "openai" '
        "(cl100k_base ids, as the openai client, LangChain and LlamaIndex send them) or "
        '"model" (ids of the embedding model\'s own tokenizer, as vLLM reads them).',
    )

    @model_validator(mode="after")
    def _a_query_is_never_bulk(self) -> EmbeddingSettings:
        if self.query_max_texts > self.bulk_above_texts:
            raise ValueError("query_max_texts must be <= bulk_above_texts")
        if self.query_max_chars > self.bulk_above_chars:
            raise ValueError("query_max_chars must be <= bulk_above_chars")
        return self

    @field_validator("gpu_engine", mode="before")
    @classmethod
    def _none_means_cpu_only(cls, value: object) -> object:
        return None if value in ("", "none") else value


class IndexSettings(Section):
    """The on-disk vector store; ``store_path`` defaults to ``<data_dir>/index.db``."""

    store_path: Path | None = None
    search_k: int = Field(default=4, ge=1, le=100)


class SourceSettings(Section):
    """Which documents and databases callers may index, and the bounds on reading them.

    See docs/security.md. ``document_roots`` empty means the directory the server started
    in; ``database_hosts`` lists host names and addresses (or networks, ``10.0.0.0/8``)
    that database URLs may name; ``databases`` names trusted sources (any host, any option)
    that callers refer to by name.
    """

    document_roots: list[Path] = Field(default_factory=list)
    allow_hidden: bool = False
    database_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1", "::1"])
    databases: dict[str, SecretStr] = Field(default_factory=dict)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    statement_timeout_s: float = Field(default=60.0, gt=0)
    refresh_timeout_s: float = Field(default=600.0, gt=0)
    max_chars_per_file: int = Field(default=2_000_000, ge=1000)
    max_chars_per_job: int = Field(default=20_000_000, ge=1000)
    extract_timeout_s: float = Field(
        default=30.0, gt=0, description="Per PDF, HTML or DOCX file; then it is skipped."
    )
    max_running_jobs: int = Field(default=1, ge=1, description="Per job kind; more are queued.")
    max_queued_jobs: int = Field(default=32, ge=0, description="Waiting jobs, in all; then 503.")
    max_queued_jobs_per_caller: int = Field(
        default=8, ge=0, description="Waiting jobs of one caller (one token); then 503."
    )


class Settings(BaseSettings):
    """Every setting of the server and the CLI, in sections."""

    model_config = SettingsConfigDict(
        env_prefix="GPUGUARD_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path(".gpuguard")
    server: ServerSettings = Field(default_factory=ServerSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    sources: SourceSettings = Field(default_factory=SourceSettings)
    models: dict[str, ModelSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _model_names_are_unique(self) -> Settings:
        seen: dict[str, str] = {}
        for name, model in self.models.items():
            for label in (name, *model.aliases):
                if label in seen and seen[label] != name:
                    raise ValueError(f"models: {label!r} names both {seen[label]!r} and {name!r}")
                seen[label] = name
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the ``GPUGUARD_CONFIG`` file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file.get() or os.environ.get(CONFIG_ENV_VAR)
        if config:
            sources.append(_file_source(settings_cls, Path(config)))
        return tuple(sources)

    @property
    def store_path(self) -> Path:
        """Where the vector store lives."""
        return self.index.store_path or self.data_dir / "index.db"

    @property
    def embedded_model(self) -> tuple[str, ModelSettings] | None:
        """The ``[models]`` entry llama-cpp runs: ``llm.model``'s, else the first with a path."""
        if self.llm.model in self.models:
            return self.llm.model, self.models[self.llm.model]
        for name, model in self.models.items():
            if model.path is not None:
                return name, model
        return None

    @property
    def model_path(self) -> Path:
        """The GGUF file for the in-process llama.cpp backend."""
        embedded = self.embedded_model
        if embedded is not None and embedded[1].path is not None:
            return embedded[1].path
        return self.llm.model_path or self.generated_model_path

    @property
    def generated_model_path(self) -> Path:
        """Where llama-cpp's generated tiny model goes when no GGUF file is configured."""
        return self.data_dir / "models" / "tiny-random.gguf"

    @property
    def model_name(self) -> str:
        """The backend's id of the model the gateway prewarms and chats with by default.

        In-process llama.cpp names its model after the GGUF file (or its ``[models]`` entry);
        ``fake`` serves ``fake-llm``; a ``[models]`` name is resolved to the entry's ``id``.
        """
        if self.llm.backend == "llama-cpp":
            embedded = self.embedded_model
            if embedded is not None:
                return embedded[1].id or embedded[0]
            return self.model_path.stem
        name = self.llm.model or "fake-llm"
        entry = self.models.get(name)
        return entry.id or name if entry is not None else name


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; ``config`` overrides ``GPUGUARD_CONFIG``; raise :class:`ConfigError`.

    ``overrides`` are section dicts or values (``server={"port": 0}``), applied over the
    environment and the file.
    """
    misnamed = misnamed_variables(os.environ, section_names(Settings))
    if misnamed:
        raise ConfigError("invalid settings: " + "; ".join(misnamed))
    given = config if config is not None else _env_config_file()
    if given is not None and not given.is_file():
        raise ConfigError(f"settings file {str(given)!r} does not exist")
    token = _config_file.set(given)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, Settings)) from exc
    except (ValueError, OSError) as exc:  # an unreadable or malformed settings file
        raise ConfigError(f"cannot read the settings file {str(given)!r}: {exc}") from exc
    finally:
        _config_file.reset(token)


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    if path.suffix == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    return DotEnvSettingsSource(
        settings_cls, env_file=path, env_prefix="GPUGUARD_", env_nested_delimiter="__"
    )


def _env_config_file() -> Path | None:
    value = os.environ.get(CONFIG_ENV_VAR)
    return Path(value) if value else None
