"""Settings spelt the way a section's key is not: an error that shows the right spelling.

pydantic-settings reads only the variables that name a field, so ``GPUGUARD_SERVER_PORT``
(one underscore where sections need two) would be silently skipped and the server would
listen on its default port. Any ``GPUGUARD_`` variable that starts with a section's name is
a setting of that section and must be spelt ``GPUGUARD_SECTION__KEY``; in a ``.env`` file,
``server.port`` and ``gpuguard_server_port`` are told the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["PREFIX", "misnamed_variables", "section_spelling"]

PREFIX = "GPUGUARD_"


def section_spelling(name: str, sections: Iterable[str]) -> str | None:
    """``GPUGUARD_SECTION__KEY`` when ``name`` means a section's key in another spelling."""
    flat = name.upper().replace(".", "__").replace("-", "_").removeprefix(PREFIX)
    for section in sorted((s.upper() for s in sections), key=len, reverse=True):
        if flat.startswith(f"{section}_") and flat != f"{section}_":
            key = flat[len(section) :].lstrip("_")
            if key:
                return f"{PREFIX}{section}__{key}"
    return None


def misnamed_variables(environ: Mapping[str, str], sections: Iterable[str]) -> list[str]:
    """One problem per ``GPUGUARD_`` variable that names a section's key with one ``_``."""
    chosen = list(sections)
    problems = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(PREFIX) or "__" in upper.removeprefix(PREFIX):
            continue
        spelling = section_spelling(upper, chosen)
        if spelling is not None:
            problems.append(f"{variable}: unknown setting; did you mean {spelling}?")
    return problems
