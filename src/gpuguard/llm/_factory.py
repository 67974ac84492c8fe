"""Build the configured :class:`~gpuguard.llm.LlmBackend` from plain settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .._exceptions import ConfigError
from ._protocol import LlmBackend
from ._timeouts import Timeouts

__all__ = ["BACKEND_KINDS", "create_backend"]

#: Every kind :func:`create_backend` accepts.
BACKEND_KINDS = ("foundry", "ollama", "llama-server", "vllm", "lmstudio", "openai", "llama-cpp")

_DEFAULT_URLS = {
    "ollama": "http://127.0.0.1:11434",
    "llama-server": "http://127.0.0.1:8080",
    "vllm": "http://127.0.0.1:8000",
    "lmstudio": "http://127.0.0.1:1234",
}


def create_backend(
    kind: str,
    *,
    base_url: str | None = None,
    model_path: str | None = None,
    model_name: str | None = None,
    api_key: str | None = None,
    n_gpu_layers: int = -1,
    n_ctx: int = 4096,
    embedding: bool = False,
    timeouts: Timeouts | None = None,
    more_models: Mapping[str, tuple[str, int, int]] | None = None,
    main_gpus: Mapping[str, int] | None = None,
) -> LlmBackend:
    """The backend for ``kind`` (one of :data:`BACKEND_KINDS`).

    ``base_url`` defaults to the server's usual local port (Ollama 11434, llama-server 8080,
    vLLM 8000, LM Studio 1234); Foundry Local without it discovers its port with the
    ``foundry`` CLI; ``openai`` requires it. ``llama-cpp`` requires ``model_path`` and uses
    ``model_name`` (default: the file's stem), ``n_gpu_layers``, ``n_ctx`` and
    ``embedding``; ``more_models`` (name to GGUF path, context size and GPU layers) makes it
    serve those too, each loaded on demand in a worker of its own (:class:`LlamaCppModels`);
    ``main_gpus`` pins models by name to a GPU (llama.cpp's ``main_gpu``, every layer there).
    ``timeouts`` bounds every call (loads long, health checks short).
    Raises :class:`~gpuguard.ConfigError` for an unknown kind or a missing required option.
    """
    if kind not in BACKEND_KINDS:
        raise ConfigError(f"unknown LLM backend kind {kind!r}; expected one of {BACKEND_KINDS}")
    timeouts = timeouts if timeouts is not None else Timeouts()
    # Each backend is imported only when chosen: the HTTP ones need httpx, which an
    # install for in-process llama.cpp alone may lack.
    if kind == "llama-cpp":
        if not model_path:
            raise ConfigError("the llama-cpp backend needs model_path (a .gguf file)")
        from .llama_cpp_embedded import LlamaCppBackend
        from .llama_cpp_models import LlamaCppModels

        pins = dict(main_gpus or {})

        def engine(path: str, name: str | None, context: int, layers: int) -> LlamaCppBackend:
            stem = name or Path(path).stem
            return LlamaCppBackend(
                path,
                model_name=name,
                n_gpu_layers=layers,
                n_ctx=context,
                embedding=embedding,
                load_timeout_s=timeouts.load_s,
                token_timeout_s=timeouts.read_s,
                main_gpu=pins.get(stem),
            )

        main = engine(model_path, model_name, n_ctx, n_gpu_layers)
        if not more_models:
            return main
        others = {
            name: engine(path, name, context, layers)
            for name, (path, context, layers) in more_models.items()
        }
        return LlamaCppModels({main.model_name: main, **others})
    if kind == "foundry":
        from .foundry import FoundryLocalBackend

        return FoundryLocalBackend(base_url, api_key=api_key, timeouts=timeouts)
    if kind == "ollama":
        from .ollama import OllamaBackend

        return OllamaBackend(base_url or _DEFAULT_URLS[kind], api_key=api_key, timeouts=timeouts)
    from .llama_server import LlamaServerBackend
    from .lmstudio import LmStudioBackend
    from .openai_compat import OpenAICompatBackend
    from .vllm import VllmBackend

    if kind == "openai" and not base_url:
        raise ConfigError("the openai backend needs base_url (the server's URL)")
    server: dict[str, type[OpenAICompatBackend]] = {
        "openai": OpenAICompatBackend,
        "llama-server": LlamaServerBackend,
        "vllm": VllmBackend,
        "lmstudio": LmStudioBackend,
    }
    url = base_url or _DEFAULT_URLS[kind]
    return server[kind](url, api_key=api_key, timeouts=timeouts)
