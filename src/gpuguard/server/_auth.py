"""The optional bearer token (settings refuse a non-loopback host without one)."""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request

__all__ = ["BearerToken"]


class BearerToken:
    """A FastAPI dependency: require ``Authorization: Bearer <token>`` when a token is set.

    ``EventSource`` cannot send headers, so ``?token=`` is accepted too (for ``/events``).
    """

    def __init__(self, token: str | None) -> None:
        self._token = token or None

    @property
    def required(self) -> bool:
        """True when requests must carry the token."""
        return self._token is not None

    async def __call__(self, request: Request) -> None:
        """Raise 401 unless the request carries the token (or none is configured)."""
        if self._token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = request.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), self._token.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
