"""What callers may index: document roots, database hosts and driver options.

The operator decides (settings, ``GPUGUARD_SOURCES__*``, ``gpuguard serve`` flags); callers
of the server name documents and databases, and :class:`SourcePolicy` refuses, with
:class:`~gpuguard.SourceUnavailable`, anything outside what was allowed:

- documents (and SQLite files) are named as written (no ``~``, no ``..``, no NUL) and must
  lie inside one of ``document_roots`` both as written and resolved, symbolic links
  included; no part of the path below the root may be hidden (a dot-name such
  as ``.ssh`` or ``.env``) unless ``allow_hidden``;
- a database URL must name a host in ``database_hosts`` (names compared as written, never
  resolved: nothing is sent to a refused host, not even a DNS query; addresses and networks
  compared as addresses), and carry only the driver options in :data:`SAFE_DRIVER_OPTIONS`
  (never ``local_infile``, never a file path);
- a name in ``databases`` stands for an operator-configured URL, trusted as it is.

Refusals name what was refused (the option, the host, the path as the caller wrote it)
and never whether a file exists outside the roots or how a refused host would answer.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import SourceUnavailable

__all__ = [
    "LOOPBACK_HOSTS",
    "SAFE_DRIVER_OPTIONS",
    "SourcePolicy",
    "is_hidden_name",
    "path_refusal",
]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Database hosts allowed by default: this machine only."""

SAFE_DRIVER_OPTIONS: Mapping[str, frozenset[str]] = {
    "postgresql": frozenset({"application_name", "password", "sslmode", "user"}),
    "mysql": frozenset({"charset", "password", "user"}),
    "mariadb": frozenset({"charset", "password", "user"}),
    "sqlite": frozenset(),
}
"""URL query options a caller may pass, per database kind: none names a file or a command."""

_SAFE_SSLMODES = frozenset({"disable", "allow", "prefer", "require"})


def is_hidden_name(name: str) -> bool:
    """True for a dot-name (``.ssh``, ``.env``), not for ``.`` or ``..``."""
    return name.startswith(".") and name not in (".", "..")


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """The operator's allow-lists for documents and databases (see the module docstring).

    ``document_roots`` of ``None`` means anywhere (a library caller indexing its own files);
    the server always passes roots. Build one from settings with :meth:`from_settings`.
    """

    document_roots: tuple[Path, ...] | None = None
    allow_hidden: bool = False
    database_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    databases: Mapping[str, str] = field(default_factory=dict)
    root_aliases: tuple[Path, ...] = ()
    """The roots as the operator wrote them (absolute, links not followed): a caller's path
    may be written under these too before it is resolved."""

    @classmethod
    def confined(
        cls,
        roots: Iterable[str | Path],
        *,
        allow_hidden: bool = False,
        database_hosts: Iterable[str] = LOOPBACK_HOSTS,
        databases: Mapping[str, str] | None = None,
    ) -> SourcePolicy:
        """A policy with ``roots`` resolved now (a root that is a symlink is followed once)."""
        written = [Path(os.path.abspath(Path(root).expanduser())) for root in roots]
        resolved = tuple(root.resolve() for root in written)
        aliases = tuple(root for root in written if root not in resolved)
        return cls(resolved, allow_hidden, tuple(database_hosts), dict(databases or {}), aliases)

    @classmethod
    def from_settings(cls, sources: Any) -> SourcePolicy:
        """From a :class:`~gpuguard.settings.SourceSettings`; no roots: the current folder."""
        roots = sources.document_roots or [Path.cwd()]
        named = {name: url.get_secret_value() for name, url in sources.databases.items()}
        return cls.confined(
            roots,
            allow_hidden=sources.allow_hidden,
            database_hosts=sources.database_hosts,
            databases=named,
        )

    # --- documents ---------------------------------------------------------------------------

    def check_path(self, path: str | Path) -> Path:
        """The resolved ``path``, or :class:`SourceUnavailable` if it is not allowed.

        The path is taken as written: no ``~`` expansion (``~root`` is a name like any
        other), no ``..``, no NUL, no name longer than the system allows; with roots, it
        must lie inside one as written, before any link is followed, and again after.
        """
        given = Path(path)
        reason = path_refusal(str(path)) or self.refusal(given)
        if reason is not None:
            raise SourceUnavailable(f"refused {_shown(path)}: {reason}")
        try:
            return given.resolve()
        except (OSError, RuntimeError) as exc:  # a link loop, a name the system refuses
            why = getattr(exc, "strerror", None) or exc
            raise SourceUnavailable(f"refused {_shown(path)}: {why}") from None

    def refusal(self, path: Path) -> str | None:
        """Why ``path`` may not be read (``None`` when it may), symlinks resolved.

        With roots, ``path`` must lie inside one as written (so that a path outside tells
        nothing about what lies there: whether a folder is a link, whether a pid is live),
        and once resolved.
        """
        absolute = path.absolute()
        if self.document_roots is not None and not any(
            _inside(absolute, root) for root in (*self.document_roots, *self.root_aliases)
        ):
            return "outside the allowed document roots"
        try:
            resolved = absolute.resolve()
        except (OSError, RuntimeError) as exc:
            return f"cannot resolve: {getattr(exc, 'strerror', None) or exc}"
        if self.document_roots is None:
            hidden = not self.allow_hidden and is_hidden_name(resolved.name)
            return "hidden files are not indexed" if hidden else None
        root = self._root_of(resolved)
        if root is None:
            return "outside the allowed document roots"
        below = resolved.relative_to(root).parts
        if not self.allow_hidden and any(is_hidden_name(part) for part in below):
            return "hidden files and folders are not indexed"
        return None

    def _root_of(self, path: Path) -> Path | None:
        return next((root for root in self.document_roots or () if _inside(path, root)), None)

    # --- databases ---------------------------------------------------------------------------

    def allows_host(self, host: str) -> bool:
        """True when ``host`` is listed, by name or as an address inside a listed network."""
        name = host.strip("[]").lower()
        address = _address(name)
        for allowed in self.database_hosts:
            entry = allowed.strip("[]").lower()
            if entry == name:
                return True
            if address is not None:
                try:
                    if address in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
        return False

    def check_host(self, host: str | None) -> None:
        """Refuse a database host that is not listed (no host means ``localhost``)."""
        if not self.allows_host(host or "localhost"):
            raise SourceUnavailable(
                f"database host {host!r} is not allowed (allowed: "
                f"{', '.join(self.database_hosts) or 'none'}; see sources.database_hosts)"
            )

    def check_options(self, backend: str, options: Mapping[str, Any]) -> None:
        """Refuse any URL query option not in :data:`SAFE_DRIVER_OPTIONS` for ``backend``."""
        safe = SAFE_DRIVER_OPTIONS.get(backend, frozenset())
        refused = sorted(key for key in options if key not in safe)
        if refused:
            allowed = ", ".join(sorted(safe)) or "none"
            raise SourceUnavailable(
                f"database URL option(s) {', '.join(refused)} not allowed for {backend} "
                f"(allowed: {allowed})"
            )
        sslmode = options.get("sslmode")
        if sslmode is not None and str(sslmode) not in _SAFE_SSLMODES:
            raise SourceUnavailable(
                f"sslmode={sslmode} not allowed (allowed: {', '.join(sorted(_SAFE_SSLMODES))}); "
                "certificate files are configured by the operator"
            )

    def check_sqlite_file(self, database: str) -> Path:
        """The SQLite file ``database`` if allowed and really an SQLite database file."""
        path = self.check_path(database)
        if _sqlite_header(path) != _SQLITE_MAGIC:
            raise SourceUnavailable(f"no SQLite database file at {database!r}")
        return path


_SQLITE_MAGIC = b"SQLite format 3\x00"
_NAME_MAX = 255  # bytes in one file name (Linux, macOS, the BSDs)
_PATH_MAX = 4096


def path_refusal(text: str) -> str | None:
    """Why a caller's path ``text`` is refused as written (``None``: it may be looked at).

    Checked before the file system sees it: no NUL, no ``..`` (resolving one would follow
    links outside the roots), no name or path longer than the system takes.
    """
    if "\x00" in text:
        return "a path cannot hold a NUL character"
    if not text:
        return "the path is empty"
    if ".." in Path(text).parts:
        return "'..' is not allowed in a document path"
    try:
        encoded = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate: no file can have that name
        return "the path is not a valid file name"
    if len(encoded) > _PATH_MAX or any(len(part) > _NAME_MAX for part in encoded.split(b"/")):
        return "a name in the path is longer than the system allows"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _shown(path: str | Path) -> str:
    """The caller's path for an error message: quoted, cut, without control characters."""
    text = str(path)
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _sqlite_header(path: Path) -> bytes:
    """The first 16 bytes of a regular file (never blocks on a FIFO); empty otherwise."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return b""
    try:
        if not _is_regular(descriptor):
            return b""
        return os.read(descriptor, len(_SQLITE_MAGIC))
    finally:
        os.close(descriptor)


def _is_regular(descriptor: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(descriptor).st_mode)


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None
