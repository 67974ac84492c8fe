"""Who may call what: one admin token per server, and whether inference is open without it.

Loopback is not one person: every local account reaches a loopback port. So, as Jupyter
does, a server without an operator-set ``server.token`` makes its own random admin token at
start; :func:`~gpuguard.server.serve` leaves it in a 0600 file for this user's CLI
(:mod:`gpuguard._server_file`) and the page gets it through a one-time link.

- **admin** (:meth:`Access.admin`): jobs, logs, model management, events, metrics, the API
  description, and retrieval (``"retrieval": true``) need the token, always.
- **inference** (:meth:`Access.caller`): the OpenAI and Ollama chat, completion, embedding and
  model-list routes are open on loopback as Ollama's are, unless the operator set a token;
  then they need it too.

The token travels as ``Authorization: Bearer <token>`` (``?token=`` on ``/events`` only, for
``EventSource``, which cannot send headers; a URL leaks into history and logs elsewhere).
A one-time code (:meth:`Access.login_code`) is exchanged once, by the page, for the token
(``POST /auth/session``); the code is in the link's fragment, which browsers never send to a
server or put in a ``Referer``.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from ._errors import error_responses
from ._fencing import admit_fence

__all__ = ["EVENTS_PATH", "MAX_LOGIN_CODES", "Access", "router"]

MAX_LOGIN_CODES = 8
"""One-time codes that may be outstanding at once; minting one more forgets the oldest."""

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}

EVENTS_PATH = "/events"
"""The one route whose token may travel in the URL: ``EventSource`` cannot send headers."""


class Access:
    """The server's admin token (the operator's, or a random one) and its one-time codes."""

    def __init__(self, operator_token: str | None) -> None:
        self.token = operator_token or secrets.token_urlsafe(32)
        self.generated = not operator_token
        self.inference_open = not operator_token
        self._codes: OrderedDict[str, None] = OrderedDict()

    def is_admin(self, request: Request) -> bool:
        """True when ``request`` carries the token (in the URL only for ``GET /events``)."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" and request.url.path == EVENTS_PATH:
            given = request.query_params.get("token", "")
        return secrets.compare_digest(given.strip().encode(), self.token.encode())

    @property
    def for_admins(self) -> dict[str, Any]:
        """``include_router`` options of admin routes: the check, and its 401 described."""
        return {
            "dependencies": [Depends(self.admin), Depends(admit_fence)],
            "responses": error_responses(401),
        }

    @property
    def for_callers(self) -> dict[str, Any]:
        """``include_router`` options of inference routes (a 401 only where a token is set)."""
        responses = {} if self.inference_open else error_responses(401)
        return {
            "dependencies": [Depends(self.caller), Depends(admit_fence)],
            "responses": responses,
        }

    def require(self, request: Request, what: str = "this route") -> None:
        """Raise 401 unless ``request`` carries the token: ``what`` is for admins only."""
        if not self.is_admin(request):
            raise HTTPException(
                401,
                f"missing or invalid bearer token: {what} needs the server's token "
                "(gpuguard serve prints a link; the CLI reads it by itself)",
                headers=_UNAUTHORIZED,
            )

    async def admin(self, request: Request) -> None:
        """FastAPI dependency: 401 unless the request carries the token."""
        self.require(request)

    async def caller(self, request: Request) -> None:
        """FastAPI dependency for inference: open unless the operator set a token."""
        if not self.inference_open:
            self.require(request)

    def login_code(self) -> str:
        """A code that :meth:`redeem` exchanges for the token once."""
        code = secrets.token_urlsafe(24)
        self._codes[code] = None
        while len(self._codes) > MAX_LOGIN_CODES:
            self._codes.popitem(last=False)
        return code

    def login_url(self, base_url: str) -> str:
        """The page's address with a fresh one-time code in its fragment."""
        return f"{base_url.rstrip('/')}/#login={self.login_code()}"

    def redeem(self, code: str) -> str | None:
        """The token for a code not used before (which is then spent), else ``None``."""
        for known in list(self._codes):
            if secrets.compare_digest(known.encode(), code.encode()):
                del self._codes[known]
                return self.token
        return None


class SessionRequest(BaseModel):
    """The one-time code from the link ``gpuguard serve`` printed."""

    model_config = ConfigDict(strict=True, extra="forbid")

    code: str = Field(min_length=1, max_length=128)


router = APIRouter(tags=["auth"])


@router.post("/auth/session", responses=error_responses(401))
async def session(body: SessionRequest, request: Request) -> dict[str, Any]:
    """Exchange a one-time code for the admin token (each code works once)."""
    access: Access = request.app.state.access
    token = access.redeem(body.code)
    if token is None:
        raise HTTPException(401, "this login link was used already or is not this server's")
    return {"token": token}
