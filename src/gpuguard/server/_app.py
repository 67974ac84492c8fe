"""The app factory: one FastAPI app over one gateway, built from settings or injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import resources

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..gateway import ModelGateway
from ..settings import Settings, load_settings
from . import (
    _access,
    _admin_routes,
    _events_route,
    _health_routes,
    _jobs_routes,
    _ollama_manage,
    _ollama_routes,
    _openai_routes,
)
from ._access import Access
from ._auth import HostCheck, allowed_host_names
from ._connections import ConnectionLimits
from ._console import EventLog, log_start_up
from ._context import JobRunner, Retriever, ServerContext
from ._errors import install_error_handlers
from ._headers import SecurityHeaders
from ._limits import BodySizeLimit
from ._logs import LogRing
from ._metrics import GuardMetrics
from ._ollama_wire import JsonBodies
from ._openapi import describe_errors_truthfully
from ._runtime import model_catalog, open_runtime
from ._stalls import StalledReaders
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
            metrics = GuardMetrics(context.gateway.guard, context.gateway.gpus)
            metrics.start()
            stack.push_async_callback(metrics.aclose)
            app.state.context = context
            app.state.metrics = metrics
            ollama.state.context = context
            yield

    token = settings.server.token.get_secret_value() if settings.server.token else None
    access = Access(token)
    admin = [Depends(access.admin)]
    app = FastAPI(
        title="gpuguard",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI would load scripts from a CDN onto the token's origin
        redoc_url=None,
        openapi_url=None,  # served below, behind the token
        default_response_class=JsonResponse,
    )
    app.state.logs = logs
    install_error_handlers(app)
    describe_errors_truthfully(app)
    app.include_router(_health_routes.router)
    app.include_router(_access.router)
    app.include_router(_openai_routes.router, **access.for_callers)
    _include_ollama(app, access)
    for router in (_admin_routes.router, _jobs_routes.router, _events_route.router):
        app.include_router(router, **access.for_admins)

    @app.get("/metrics", dependencies=admin, include_in_schema=False)
    async def metrics() -> Response:
        rendered = app.state.metrics.render()
        return Response(rendered, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/openapi.json", dependencies=admin, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask for /favicon.ico whatever the page links; the icon is an SVG.
        return FileResponse(str(STATIC_DIR / "favicon.svg"), media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    ollama = _ollama_port_app(settings, access)
    for served in (app, ollama):
        _share_state(served, settings, access)
        _bound_requests(served, settings)
        _answer_own_names_only(served, settings)
    app.state.ollama_app = ollama
    return app


def ollama_app(app: FastAPI) -> FastAPI:
    """The Ollama API of ``app`` alone, for a port of its own (Ollama's is 11434).

    It shares ``app``'s gateway once ``app`` has started (serve ``app`` first), its token
    and its body limit; ``GET /`` answers "Ollama is running" as Ollama does.
    """
    ollama: FastAPI = app.state.ollama_app
    return ollama


def _ollama_port_app(settings: Settings, access: Access) -> FastAPI:
    app = FastAPI(
        title="gpuguard (Ollama API)",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=JsonResponse,
    )
    install_error_handlers(app)
    _include_ollama(app, access)
    app.include_router(_ollama_routes.root_router)
    return app


def _include_ollama(app: FastAPI, access: Access) -> None:
    """Ollama's inference and model-list routes for callers; its model management for admins."""
    app.include_router(_ollama_routes.router, **access.for_callers)
    app.include_router(_ollama_manage.router, prefix="/api", **access.for_admins)


def _share_state(app: FastAPI, settings: Settings, access: Access) -> None:
    """What the routes and the protocol read from ``app.state``: one of each per server."""
    server = settings.server
    app.state.access = access
    app.state.subscribers = _events_route.SubscriberLimit(
        total=server.max_event_subscribers, per_client=server.max_event_subscribers_per_client
    )
    app.state.model_policy = _ollama_manage.ManagementPolicy(
        registries=frozenset(name.lower() for name in server.ollama_registries),
        allow_insecure=server.ollama_allow_insecure,
        allow_local_paths=server.ollama_allow_local_paths,
    )
    app.state.connection_limits = ConnectionLimits(
        max_connections=server.max_connections,
        head_timeout_s=server.request_head_timeout_s,
        stalled_s=server.stalled_reader_s,
    )


def _bound_requests(app: FastAPI, settings: Settings) -> None:
    """Request bodies: bounded in size, JSON on Ollama paths, and valid Unicode text.

    Answers: each write bounded in time (a reader that takes nothing loses its answer).
    """
    # The last added runs first: the size limit, then the JSON media type, then the text.
    app.add_middleware(ValidTextBodies)
    app.add_middleware(JsonBodies)
    app.add_middleware(BodySizeLimit, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(StalledReaders, stalled_s=settings.server.stalled_reader_s)


def _answer_own_names_only(app: FastAPI, settings: Settings) -> None:
    """Added last, so that it runs first: a request for another name is refused at once.

    Every answer, refusals included, carries the headers that keep it out of frames.
    """
    names = allowed_host_names(settings.server.host, settings.server.allowed_hosts)
    app.add_middleware(HostCheck, allowed=names)
    app.add_middleware(SecurityHeaders)
