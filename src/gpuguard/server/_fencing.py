"""``X-GPU-Fence: <gpu>:<token>[:<floor>]``: a gpuguard in front names its lease's fence.

A request that carries the header is admitted only if its token is not older than the newest
this server has seen for that GPU (:class:`~gpuguard.guard.FenceBook`, shared with the
server's own leases); an older one is answered 409 (:class:`~gpuguard.StaleFence`) before
any work starts. A front whose lease shares the GPU (the budget policy) adds its grant's
floor, the oldest token still holding beside it: tokens at or above the highest floor seen
pass. A malformed header, or one naming a GPU this server does not serve, is a
400. Requests without the header are not fenced. Only a caller with the server's token may
send the header (401 otherwise), even where inference is open.
"""

from __future__ import annotations

import re

from fastapi import Request

from .._exceptions import InvalidRequest
from ..guard._fences import FENCE_HEADER
from ._context import get_context

__all__ = ["admit_fence"]

_VALUE = re.compile(
    r"(?P<gpu>[A-Za-z0-9._-]{1,64}):(?P<token>[0-9]{1,19})(?::(?P<floor>[0-9]{1,19}))?"
)


async def admit_fence(request: Request) -> None:
    """FastAPI dependency: refuse a request whose fence is older than the newest seen."""
    values = request.headers.getlist(FENCE_HEADER)
    if not values:
        return
    # Only a caller with the server's token may move the fence: a forged far-future token
    # from anyone else would have every later fenced request refused.
    request.app.state.access.require(request, FENCE_HEADER)
    match = _VALUE.fullmatch(values[0]) if len(values) == 1 else None
    if match is None or (match["floor"] is not None and int(match["floor"]) > int(match["token"])):
        raise InvalidRequest(
            FENCE_HEADER,
            "must be one '<gpu>:<token>' or '<gpu>:<token>:<floor>' (decimal fencing tokens, "
            "the floor no larger than the token)",
        )
    fences = get_context(request).gateway.guard.fences
    if match["gpu"] != fences.gpu:
        raise InvalidRequest(
            FENCE_HEADER, f"names GPU {match['gpu']!r}; this server fences GPU {fences.gpu!r}"
        )
    floor = None if match["floor"] is None else int(match["floor"])
    operation = f"{request.method} {request.url.path}"
    fences.admit(int(match["token"]), operation=operation, floor=floor)
