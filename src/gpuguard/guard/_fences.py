"""Fencing tokens checked: the newest fence seen for one GPU refuses work under an older one.

A scope that issues fences (Redis) gives every grant a token larger than any before it. A
holder whose lease lapsed (stopped, cut off) may still send work; a newer holder's work
carries a newer token. Where gpuguard is the last hop before the GPU (the lease's own GPU
work, ``gpuguard serve`` in front of a shared GPU server), :class:`FenceBook` remembers the
newest token seen and refuses an older one with :class:`~gpuguard.StaleFence`. Equal or
newer tokens pass; work without a token (scopes that issue none) is not fenced.
"""

from __future__ import annotations

from .._exceptions import StaleFence

__all__ = ["FenceBook"]


class FenceBook:
    """The newest fencing token seen for one GPU (``gpu``), and the check against it."""

    def __init__(self, gpu: str) -> None:
        self.gpu = gpu
        self._newest: int | None = None

    @property
    def newest(self) -> int | None:
        """The newest token admitted so far (None before the first)."""
        return self._newest

    def admit(self, fence: int, *, operation: str, model: str | None = None) -> None:
        """Let work under ``fence`` go to the GPU, or raise :class:`StaleFence` if older.

        A token newer than any seen becomes the newest: from then on older ones are refused.
        """
        newest = self._newest
        if newest is not None and fence < newest:
            raise StaleFence(
                operation=operation, model=model, gpu=self.gpu, fence=fence, newest=newest
            )
        self._newest = fence

    def __repr__(self) -> str:
        return f"<FenceBook {self.gpu!r} newest={self._newest}>"
