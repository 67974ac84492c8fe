"""The gpuguard server: OpenAI-compatible API, admin and job API, SSE events, metrics, web page.

``create_app`` builds the FastAPI app; ``running_server`` and ``ServerThread`` run it on
uvicorn (in the current event loop, or from synchronous code); ``open_runtime`` builds the
objects behind it from settings (also used by the CLI).
"""

from ._app import create_app
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
    "open_runtime",
    "running_server",
    "serve",
]
