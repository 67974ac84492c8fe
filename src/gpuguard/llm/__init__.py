"""LLM backends behind one protocol.

Foundry Local, Ollama, OpenAI-compatible servers (llama.cpp's llama-server, vLLM,
LM Studio) and llama.cpp in-process. :func:`create_backend` builds one from plain
settings; every backend maps its server's failures to :class:`~gpuguard.BackendError`
subclasses and bounds every call with :class:`Timeouts`.

The protocol and its value types import with no third-party dependency; the backends are
imported on first use, so ``import gpuguard.llm`` never needs httpx or numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from ._factory import BACKEND_KINDS, create_backend
from ._protocol import (
    BackendHealth,
    ChatChunk,
    ChatMessage,
    ChatOptions,
    LlmBackend,
    LoadedModel,
    complete_usage,
    reject_unsupported,
)
from ._timeouts import Timeouts

if TYPE_CHECKING:
    from .foundry import FoundryLocalBackend, discover_foundry_endpoint
    from .llama_cpp_embedded import LlamaCppBackend
    from .llama_cpp_models import LlamaCppModels
    from .llama_server import LlamaServerBackend
    from .lmstudio import LmStudioBackend
    from .ollama import OllamaBackend
    from .openai_compat import OpenAICompatBackend
    from .tiny_model import write_tiny_gguf
    from .vllm import VllmBackend

__all__ = [
    "BACKEND_KINDS",
    "BackendHealth",
    "ChatChunk",
    "ChatMessage",
    "ChatOptions",
    "FoundryLocalBackend",
    "LlamaCppBackend",
    "LlamaCppModels",
    "LlamaServerBackend",
    "LlmBackend",
    "LmStudioBackend",
    "LoadedModel",
    "OllamaBackend",
    "OpenAICompatBackend",
    "Timeouts",
    "VllmBackend",
    "complete_usage",
    "create_backend",
    "discover_foundry_endpoint",
    "reject_unsupported",
    "write_tiny_gguf",
]

_LAZY = {
    "FoundryLocalBackend": ".foundry",
    "discover_foundry_endpoint": ".foundry",
    "LlamaCppBackend": ".llama_cpp_embedded",
    "LlamaCppModels": ".llama_cpp_models",
    "OllamaBackend": ".ollama",
    "LlamaServerBackend": ".llama_server",
    "LmStudioBackend": ".lmstudio",
    "OpenAICompatBackend": ".openai_compat",
    "VllmBackend": ".vllm",
    "write_tiny_gguf": ".tiny_model",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
