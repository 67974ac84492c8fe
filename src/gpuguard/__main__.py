"""``python -m gpuguard``: the ``gpuguard`` command."""

from .cli import main

main()
