"""Supervised worker processes: in-process GPU engines that can be killed.

:class:`WorkerProcess` (:mod:`._process`) is the parent's side; :mod:`._child` runs in the
child, builds the engine from an importable factory and serves calls over one pipe.
"""

from ._process import WorkerProcess

__all__ = ["WorkerProcess"]
