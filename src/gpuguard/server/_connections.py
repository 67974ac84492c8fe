"""Bound what a connection may hold: how many are open, how long a request head may take.

uvicorn accepts every connection and waits for a request head for ever, so 1,100 idle or
half-sent sockets (slowloris) once used every descriptor of the process. The protocol that
:func:`guarded_protocol` builds (uvicorn's h11 one, with three timers) bounds

- **connections**: at most ``max_connections`` open; one more closes the connection that has
  been idle longest (no request in flight: a slow-header socket or a kept-alive one), and
  when every one is busy the new one is answered ``503`` with ``Retry-After`` and closed;
- **time to a request head**: a new connection, or one whose next request has begun, must
  send the whole head within ``head_timeout_s``, else ``408`` and closed (idle kept-alive
  connections are uvicorn's own keep-alive timeout's);
- **a reader that takes nothing**: a connection whose answer could not be written for
  ``2 * stalled_s`` is aborted. (The app ends such a stream after ``stalled_s``, which frees
  the GPU; see :mod:`._stalls`. This frees the descriptor when the reader never returns.)
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionLimits", "guarded_protocol"]

_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """``server.max_connections``, ``server.request_head_timeout_s``, ``stalled_reader_s``."""

    max_connections: int = 512
    head_timeout_s: float = 10.0
    stalled_s: float = 30.0


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """A uvicorn HTTP protocol class that keeps ``limits`` (one class per server)."""
    idle: OrderedDict[Guarded, None] = OrderedDict()  # no request in flight, longest first

    class Guarded(H11Protocol):
        _refused = False
        _head_timer: asyncio.TimerHandle | None = None
        _stall_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections and not _evict_one():
                self._refused = True
                transport.write(_BUSY)
                transport.close()
                return
            super().connection_made(transport)
            idle[self] = None
            self._expect_head()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            idle.pop(self, None)
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._between_requests():
                self._expect_head()
            super().data_received(data)
            self._note_request()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                idle.pop(self, None)
                idle[self] = None
            self._note_request()

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall_timer is None:
                self._stall_timer = self.loop.call_later(2 * limits.stalled_s, self._stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _expect_head(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.head_timeout_s, self._head_late)

        def _note_request(self) -> None:
            """A request head has arrived: the connection is busy, not idle or timed."""
            if not self._between_requests():
                idle.pop(self, None)
                if self._head_timer is not None:
                    self._head_timer.cancel()
                    self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.write(_TIMEOUT)
                self.transport.close()

        def _stalled(self) -> None:
            self._stall_timer = None
            self.transport.abort()

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._stall_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._stall_timer = None

    def _evict_one() -> bool:
        """Close the connection idle longest; False when every connection is busy."""
        while idle:
            victim, _ = idle.popitem(last=False)
            if not victim.transport.is_closing():
                victim._cancel_timers()
                victim.transport.close()
                return True
        return False

    return Guarded
