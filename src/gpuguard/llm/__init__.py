"""LLM backends behind one protocol: Foundry Local, Ollama, OpenAI-compatible servers
(llama.cpp's llama-server, vLLM, LM Studio) and llama.cpp in-process."""

from ._protocol import BackendHealth, ChatChunk, ChatMessage, LlmBackend, LoadedModel

__all__ = ["BackendHealth", "ChatChunk", "ChatMessage", "LlmBackend", "LoadedModel"]
