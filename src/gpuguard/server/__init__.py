"""The gpuguard server: OpenAI and Ollama APIs, admin and job API, SSE, metrics, web page.

``create_app`` builds the FastAPI app (``ollama_app``: its Ollama API, for a port of its
own); ``running_server`` and ``ServerThread`` run it on uvicorn (in the current event loop,
or from synchronous code); ``open_runtime`` builds the objects behind it from settings (also
used by the CLI).
"""

from ._app import create_app, ollama_app
from ._context import JobRunner, JobView, Retriever, ServerContext
from ._errors import ErrorKind, kind_of
from ._runtime import Runtime, open_runtime
from ._serving import ServerThread, running_server, serve

__all__ = [
    "ErrorKind",
    "JobRunner",
    "JobView",
    "Retriever",
    "Runtime",
    "ServerContext",
    "ServerThread",
    "create_app",
    "kind_of",
    "ollama_app",
    "open_runtime",
    "running_server",
    "serve",
]
