"""Run an app on uvicorn: inside the current event loop, or in a background thread."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from .._server_file import remove_server_file, write_server_file
from ._app import ollama_app
from ._connections import ConnectionLimits, guarded_protocol

__all__ = ["KEEP_ALIVE_S", "ServerThread", "running_server", "serve"]

T = TypeVar("T")

logger = logging.getLogger("gpuguard.server")

KEEP_ALIVE_S = 75
"""How long the server keeps an idle HTTP/1.1 connection open.

Longer than the pools of this API's clients keep one (httpx and so the openai client: 5 s;
aiohttp: 15 s), because an idle connection is only closed safely by the client: when the
server closes it at the very moment the client's pool hands it to a new request, that
request is reset before its first byte (``ReadError``). uvicorn's default (5 s) equals
httpx's expiry, and lost requests under load. (Browsers keep connections longer, but retry
a request that fails on a reused connection.)
"""

# How often to look whether uvicorn finished its startup (the lifespan) or died trying.
_STARTUP_POLL_S = 0.01

logger = logging.getLogger("gpuguard.server")


async def serve(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    ollama_port: int | None = None,
    on_serving: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` until interrupted (Ctrl-C, SIGTERM).

    With ``ollama_port``, its Ollama API (:func:`~gpuguard.server.ollama_app`) is served on
    that port too, once ``app`` has started. "serving on URL" is logged only once the socket
    is bound and the app has started (then ``on_serving(url)`` runs: the CLI prints the page's
    one-time link there); a port in use raises ``OSError`` before anything runs. While it
    serves, the admin token waits for this user's CLI in an owner-only file
    (:mod:`gpuguard._server_file`), removed at the end.
    """
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(running_server(app, host=host, port=port))
        logger.info("gpuguard serving on %s", url)
        if ollama_port is not None:
            ollama_url = await stack.enter_async_context(
                running_server(ollama_app(app), host=host, port=ollama_port)
            )
            logger.info("Ollama API also on %s", ollama_url)
        with _token_file(app, host, port):
            if on_serving is not None:
                on_serving(url)
            await _until_interrupted()


@contextmanager
def _token_file(app: FastAPI, host: str, port: int) -> Iterator[None]:
    """Leave the app's admin token for this user's CLI while the body runs."""
    access = getattr(app.state, "access", None)
    if access is None or port == 0:
        yield
        return
    url_host = f"[{host}]" if ":" in host else host
    try:
        write_server_file(port, f"http://{url_host}:{port}", access.token)
    except OSError as exc:
        logger.warning("the CLI will need --token: the token file was not written (%s)", exc)
    try:
        yield
    finally:
        remove_server_file(port)


async def _until_interrupted() -> None:
    """Wait for SIGINT or SIGTERM (Ctrl-C alone where signals cannot be hooked)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    hooked = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):
            continue
        hooked.append(signum)
    try:
        await stop.wait()
    finally:
        for signum in hooked:
            loop.remove_signal_handler(signum)


def _config(app: FastAPI, *, keep_alive_s: int = KEEP_ALIVE_S, **options: Any) -> uvicorn.Config:
    """Uvicorn's settings, with the connection bounds the app was built with."""
    limits = getattr(app.state, "connection_limits", None) or ConnectionLimits()
    return uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=keep_alive_s,
        http=guarded_protocol(limits),
        **options,
    )


@asynccontextmanager
async def running_server(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, keep_alive_s: int = KEEP_ALIVE_S
) -> AsyncIterator[str]:
    """Serve ``app`` in this event loop while the ``async with`` body runs; yields its URL.

    ``port=0`` picks a free port. Startup errors (the lifespan failed) are raised here.
    ``keep_alive_s`` is the idle-connection timeout (see :data:`KEEP_ALIVE_S`).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, keep_alive_s=keep_alive_s))
    task = asyncio.create_task(server._serve(sockets=[sock]), name="uvicorn")
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the startup error
                raise RuntimeError("the server stopped during its startup")
            await asyncio.sleep(_STARTUP_POLL_S)
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()


class ServerThread:
    """Serve an app from a background thread with its own event loop (for synchronous code).

    ``with ServerThread(app) as url: ...``; :meth:`call` runs a coroutine on the server's
    loop, where the app's gateway and guard live.
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="gpuguard-server", daemon=True)
        self._ready: Future[str] = Future()

    def __enter__(self) -> str:
        self._thread.start()
        self.url = self._ready.result()
        return self.url

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``coroutine`` on the server's event loop; its result arrives in the future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with running_server(self.app, host=self.host, port=self.port) as url:
            self._ready.set_result(url)
            await self._stop.wait()
