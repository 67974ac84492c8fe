"""The ``gpuguard`` command line: serve, demo, chat, index, models, status."""

from ._app import app, main

__all__ = ["app", "main"]
