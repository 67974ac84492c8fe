"""What the protocol doubles share.

A real HTTP server in a background thread, GPU-work recording with an "idle" wait, and
deterministic fake answers and vectors.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._intervals import IntervalRecorder

__all__ = ["ServedDouble", "fake_tokens", "fake_vector"]

_START_TIMEOUT_S = 10.0


def fake_tokens(prompt: str, max_tokens: int | None) -> tuple[list[str], str]:
    """The answer to ``prompt`` as tokens (``"echo:"`` and its words) and a finish reason."""
    words = f"echo: {prompt}".split()
    tokens = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
    if max_tokens is not None and max_tokens < len(tokens):
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def fake_vector(text: str, dimension: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    digest = hashlib.shake_256(text.encode()).digest(dimension)
    values = [b / 255.0 - 0.5 for b in digest]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


class ServedDouble:
    """A server double: an ASGI app served by uvicorn on ``127.0.0.1``, in a thread.

    It listens on a free port, started and stopped by ``with`` (or :meth:`start` and
    :meth:`stop`).

    GPU work is recorded into ``recorder`` (pass one to share it with other GPU users);
    :meth:`wait_idle` waits until no GPU work is running, e.g. after a client closed a
    stream (a real server too stops generating a moment after the client leaves);
    :meth:`wait_for_requests` until a request has arrived a number of times.
    """

    name = "double"

    def __init__(self, *, recorder: IntervalRecorder | None) -> None:
        self.recorder = recorder if recorder is not None else IntervalRecorder()
        #: Every request received, as ``"METHOD /path?query"``.
        self.requests: list[str] = []
        self._busy = 0
        self._idle = threading.Condition()
        self._received = threading.Condition()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    def _routes(self) -> list[Route]:
        raise NotImplementedError

    def _app(self) -> ASGIApp:
        app = Starlette(routes=self._routes())

        async def logged(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                query = scope["query_string"].decode()
                with self._received:
                    self.requests.append(
                        f"{scope['method']} {scope['path']}{'?' * bool(query)}{query}"
                    )
                    self._received.notify_all()
            await app(scope, receive, send)

        return logged

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` while started."""
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._url

    @contextmanager
    def gpu_work(self, what: str) -> Iterator[None]:
        """Record the ``with`` body as GPU work and count it as running."""
        with self._idle:
            self._busy += 1
        try:
            with self.recorder.record(self.name, what):
                yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until no GPU work runs (raises TimeoutError after ``timeout``)."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._busy == 0, timeout):
                raise TimeoutError(f"{self.name} still busy after {timeout}s")

    def wait_for_requests(self, request: str, count: int, timeout: float = 5.0) -> None:
        """Block until ``request`` (``"METHOD /path"``) has arrived ``count`` times in all."""
        with self._received:
            if not self._received.wait_for(lambda: self.requests.count(request) >= count, timeout):
                raise TimeoutError(f"{self.name} got {request!r} fewer than {count} times")

    def start(self) -> str:
        """Start serving; returns the base URL."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # connections queue from now on, before the server even runs
        self._url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} failed to start")
            time.sleep(0.005)
        return self._url

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=_START_TIMEOUT_S)
        self._server = self._thread = None
        self._url = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
