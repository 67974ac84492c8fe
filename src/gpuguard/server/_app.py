"""The app factory: one FastAPI app over one gateway, built from settings or injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..gateway import ModelGateway
from ..settings import Settings, load_settings
from . import (
    _admin_routes,
    _events_route,
    _health_routes,
    _jobs_routes,
    _ollama_routes,
    _openai_routes,
)
from ._auth import BearerToken, HostCheck, allowed_host_names
from ._console import EventLog, log_start_up
from ._context import JobRunner, Retriever, ServerContext
from ._errors import install_error_handlers
from ._fencing import admit_fence
from ._limits import BodySizeLimit
from ._logs import LogRing
from ._metrics import GuardMetrics
from ._ollama_wire import JsonBodies
from ._openapi import describe_errors_truthfully
from ._runtime import model_catalog, open_runtime
from ._text import JsonResponse, ValidTextBodies

__all__ = ["create_app", "ollama_app"]

STATIC_DIR = resources.files("gpuguard.server") / "static"


def create_app(
    settings: Settings | None = None,
    *,
    gateway: ModelGateway | None = None,
    retriever: Retriever | None = None,
    jobs: JobRunner | None = None,
) -> FastAPI:
    """The gpuguard server: OpenAI and Ollama APIs, admin and job API, SSE, metrics, web page.

    The Ollama API is served under ``/api/`` here, and by :func:`ollama_app` (the same
    routes over the same gateway, plus Ollama's ``GET /``) for a port of its own.

    With ``gateway`` given, the caller owns it (and ``retriever``/``jobs``): the app neither
    starts nor closes them. Without it, the app builds everything from ``settings`` (read
    from the environment and ``GPUGUARD_CONFIG`` when omitted) at startup and closes it at
    shutdown.
    """
    settings = settings if settings is not None else load_settings()
    injected = None
    if gateway is not None:
        catalog = model_catalog(settings)
        injected = ServerContext(gateway, retriever=retriever, jobs=jobs, models=catalog)
    logs = LogRing()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            logs.attach()
            stack.callback(logs.detach)
            context = injected
            if context is None:
                runtime = await stack.enter_async_context(open_runtime(settings))
                context = runtime.context()
            log_start_up(settings, context.gateway)
            event_log = EventLog()
            context.gateway.events.add_listener(event_log)
            stack.callback(context.gateway.events.remove_listener, event_log)
            metrics = GuardMetrics(context.gateway.guard)
            metrics.start()
            stack.push_async_callback(metrics.aclose)
            app.state.context = context
            app.state.metrics = metrics
            ollama.state.context = context
            yield

    token = settings.server.token.get_secret_value() if settings.server.token else None
    # Authenticated first, then fenced: a request's X-GPU-Fence is admitted only if allowed in.
    auth = [Depends(BearerToken(token)), Depends(admit_fence)]
    app = FastAPI(
        title="gpuguard",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        default_response_class=JsonResponse,
    )
    app.state.logs = logs
    install_error_handlers(app)
    describe_errors_truthfully(app)
    app.include_router(_health_routes.router)
    for router in (
        _openai_routes.router,
        _ollama_routes.router,
        _admin_routes.router,
        _jobs_routes.router,
        _events_route.router,
    ):
        app.include_router(router, dependencies=auth)

    @app.get("/metrics", dependencies=auth, include_in_schema=False)
    async def metrics() -> Response:
        rendered = app.state.metrics.render()
        return Response(rendered, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask for /favicon.ico whatever the page links; the icon is an SVG.
        return FileResponse(str(STATIC_DIR / "favicon.svg"), media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    _bound_bodies(app, settings)
    _answer_own_names_only(app, settings)
    ollama = _ollama_port_app(settings, auth)
    app.state.ollama_app = ollama
    return app


def ollama_app(app: FastAPI) -> FastAPI:
    """The Ollama API of ``app`` alone, for a port of its own (Ollama's is 11434).

    It shares ``app``'s gateway once ``app`` has started (serve ``app`` first), its token
    and its body limit; ``GET /`` answers "Ollama is running" as Ollama does.
    """
    ollama: FastAPI = app.state.ollama_app
    return ollama


def _ollama_port_app(settings: Settings, auth: list[Any]) -> FastAPI:
    app = FastAPI(
        title="gpuguard (Ollama API)",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=JsonResponse,
    )
    install_error_handlers(app)
    app.include_router(_ollama_routes.router, dependencies=auth)
    app.include_router(_ollama_routes.root_router)
    _bound_bodies(app, settings)
    _answer_own_names_only(app, settings)
    return app


def _bound_bodies(app: FastAPI, settings: Settings) -> None:
    """Request bodies: bounded in size, JSON on Ollama paths, and valid Unicode text."""
    # The last added runs first: the size limit, then the JSON media type, then the text.
    app.add_middleware(ValidTextBodies)
    app.add_middleware(JsonBodies)
    app.add_middleware(BodySizeLimit, max_bytes=settings.server.max_body_bytes)


def _answer_own_names_only(app: FastAPI, settings: Settings) -> None:
    """Added last, so that it runs first: a request for another name is refused at once."""
    names = allowed_host_names(settings.server.host, settings.server.allowed_hosts)
    app.add_middleware(HostCheck, allowed=names)
