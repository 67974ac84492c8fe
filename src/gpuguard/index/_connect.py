"""Database URLs: the schemes people write, the operator's policy, and every driver's timeouts.

``postgres://`` and ``postgresql://`` mean psycopg (3), ``mysql://`` and ``mariadb://`` mean
PyMySQL, ``sqlite:///`` the standard library; a URL naming its driver (``postgresql+psycopg2``)
is taken as written. Every connection gets a connect timeout and a per-statement (read)
timeout; the job that reads a schema over the network also runs it in a child process under
an overall time limit (:mod:`gpuguard.index._isolated`).

A connection made for a caller uses only what the caller's URL says (:func:`url_only_args`):
never the operator's ``~/.pgpass``, ``PGPASSWORD``, ``PGSERVICE`` or other ``PG*``/``MYSQL*``
variables, client certificates, Kerberos tickets, or the Unix socket (where ``peer`` needs
no password): a caller's URL must name its host. An operator-configured named source is the
operator's own URL and keeps the operator's environment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from .._exceptions import SourceUnavailable
from .._redact import redact
from .policy import SourcePolicy

__all__ = [
    "AMBIENT_ENVIRONMENT_PREFIXES",
    "DatabaseTimeouts",
    "connect_args",
    "parse_url",
    "resolve_source",
    "url_only_args",
    "without_ambient_environment",
]

_SCHEMES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

AMBIENT_ENVIRONMENT_PREFIXES = ("PG", "MYSQL", "KRB5")
"""Environment variables that drivers read as defaults (libpq, libmysqlclient, Kerberos)."""

# A path that cannot exist (ENOTDIR): libpq then sends no client certificate or key.
_NO_FILE = os.path.join(os.devnull, "none")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


@dataclass(frozen=True, slots=True)
class DatabaseTimeouts:
    """How long a schema read may take: to connect, per statement (or read), in all.

    ``total_s`` bounds the whole introspection (a job stops it there); ``None``: no limit.
    """

    connect_s: float = 10.0
    statement_s: float = 60.0
    total_s: float | None = 600.0

    def __post_init__(self) -> None:
        if self.connect_s <= 0 or self.statement_s <= 0:
            raise ValueError("database timeouts must be > 0")
        if self.total_s is not None and self.total_s <= 0:
            raise ValueError("total_s must be > 0 or None")


def parse_url(url: str) -> Any:
    """The SQLAlchemy URL for ``url``, with the usual schemes mapped to installed drivers."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    scheme, separator, rest = url.partition("://")
    if separator and scheme.lower() in _SCHEMES:
        url = f"{_SCHEMES[scheme.lower()]}://{rest}"
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise SourceUnavailable(f"not a valid database URL: {redact(str(exc))}") from exc


def resolve_source(url_or_name: str, policy: SourcePolicy | None) -> str:
    """The URL to connect to, after ``policy`` (``None``: trusted, no check) allowed it.

    A name the operator configured in ``policy.databases`` stands for its URL, unchecked.
    Raises :class:`SourceUnavailable` for a malformed URL, an unknown or missing driver, a
    refused host, option or file, or a missing SQLite file.
    """
    if policy is not None and url_or_name in policy.databases:
        url = policy.databases[url_or_name]
        _check_driver(parse_url(url))
        return url
    parsed = parse_url(url_or_name)
    backend = parsed.get_backend_name()
    database = parsed.database
    on_disk = backend == "sqlite" and database not in (None, "", ":memory:")
    _check_driver(parsed)
    if policy is not None:
        policy.check_options(backend, dict(parsed.query))
        if backend == "sqlite":
            if on_disk:
                policy.check_sqlite_file(str(database))
        elif parsed.host and "@" in parsed.host:
            raise SourceUnavailable("the database URL has an '@' in its password: write it as %40")
        elif not parsed.host:
            raise SourceUnavailable(
                "the database URL names no host: name one (such as 127.0.0.1); "
                "the local socket is never used for callers"
            )
        else:
            policy.check_host(parsed.host)
    if on_disk and policy is None:
        from pathlib import Path

        if not Path(str(database)).is_file():
            raise SourceUnavailable(f"no SQLite database file at {database!r}")
    return str(parsed.render_as_string(hide_password=False))


def connect_args(backend: str, timeouts: DatabaseTimeouts) -> dict[str, Any]:
    """Driver keyword arguments that bound connecting and every statement."""
    connect_s = max(1, math.ceil(timeouts.connect_s))
    if backend == "postgresql":
        statement_ms = max(1, round(timeouts.statement_s * 1000))
        return {"connect_timeout": connect_s, "options": f"-c statement_timeout={statement_ms}"}
    if backend in ("mysql", "mariadb"):
        return {
            "connect_timeout": connect_s,
            "read_timeout": timeouts.statement_s,
            "write_timeout": timeouts.statement_s,
        }
    if backend == "sqlite":
        return {"timeout": timeouts.connect_s}
    return {}


def url_only_args(parsed: Any) -> dict[str, Any]:
    """Driver keyword arguments that leave nothing to the environment but the URL's words.

    For libpq (psycopg, psycopg2): no password file, no password but the URL's, the URL's
    port or the default one (never ``PGPORT``), no client certificate, no GSSAPI. Variables
    libpq reads for what is not given (``PGSERVICE``, ``PGOPTIONS``...) are cleared by the
    process that connects (:func:`gpuguard.index._isolated`). PyMySQL reads no option file
    unless asked (``read_default_file`` is not an allowed option) and no environment; for
    MySQL and MariaDB ``localhost`` is ``127.0.0.1``, since libmysqlclient (mysqlclient)
    takes ``localhost`` for its Unix socket, where ``unix_socket`` authentication needs no
    password.
    """
    backend = parsed.get_backend_name()
    if backend not in _DEFAULT_PORTS:
        return {}
    forced: dict[str, Any] = {"port": parsed.port or _DEFAULT_PORTS[backend]}
    if backend != "postgresql" and str(parsed.host).lower() == "localhost":
        forced["host"] = "127.0.0.1"
    if backend == "postgresql":
        forced |= {
            "passfile": os.devnull,
            "sslcert": _NO_FILE,
            "sslkey": _NO_FILE,
            "gssencmode": "disable",
        }
        if parsed.password is None and "password" not in parsed.query:
            forced["password"] = ""
    return forced


def without_ambient_environment() -> None:
    """Remove from this process's environment every variable a driver reads as a default."""
    for name in [name for name in os.environ if name.startswith(AMBIENT_ENVIRONMENT_PREFIXES)]:
        del os.environ[name]


def _check_driver(parsed: Any) -> None:
    try:
        parsed.get_dialect().import_dbapi()  # the dialect, and the driver it needs, installed
    except Exception as exc:  # NoSuchModuleError, or the driver's own ImportError
        raise SourceUnavailable(
            f"unsupported database URL scheme {parsed.drivername!r}: {redact(str(exc))}"
        ) from exc
