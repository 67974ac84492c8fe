"""The ``gpuguard`` command line: serve, demo, chat, index, models, status, run."""

from ._app import app, main

__all__ = ["app", "main"]
