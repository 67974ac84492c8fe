"""The operator's allow-lists: document roots, database hosts, driver options, named sources."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gpuguard import SourceUnavailable
from gpuguard.index import SourcePolicy, resolve_source


def test_hosts_match_by_name_address_or_network() -> None:
    policy = SourcePolicy(database_hosts=("localhost", "::1", "10.1.0.0/16", "db.lan"))
    for host in ("localhost", "LOCALHOST", "[::1]", "10.1.2.3", "db.lan"):
        assert policy.allows_host(host), host
    for host in ("127.0.0.2", "10.2.0.1", "db.lan.invalid", "169.254.169.254", "::2"):
        assert not policy.allows_host(host), host


def test_a_callers_url_without_host_is_refused_a_trusted_one_kept() -> None:
    with pytest.raises(SourceUnavailable, match="names no host"):
        resolve_source("postgresql:///test", SourcePolicy())
    assert resolve_source("postgresql:///test", None).startswith("postgresql+psycopg")
    named = SourcePolicy(databases={"local": "postgresql:///test"})
    assert resolve_source("local", named) == "postgresql:///test"


def test_named_sources_are_trusted_as_configured() -> None:
    url = "postgresql://reader:pw@db.remote.invalid/app?sslrootcert=/etc/ssl/ca.pem"
    policy = SourcePolicy(databases={"warehouse": url})
    assert resolve_source("warehouse", policy) == url
    with pytest.raises(SourceUnavailable, match="not allowed"):
        resolve_source(url, policy)  # the same URL from a caller is checked


def test_roots_resolve_symlinks_and_hide_dot_names(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    policy = SourcePolicy.confined([tmp_path / "alias"])
    assert policy.check_path(real / "sub") == real / "sub"
    assert policy.refusal(tmp_path / "alias" / ".env") == "hidden files and folders are not indexed"
    assert policy.refusal(tmp_path) == "outside the allowed document roots"
    allowing = SourcePolicy.confined([real], allow_hidden=True)
    assert allowing.refusal(real / ".env") is None


def test_sqlite_inside_the_roots_is_accepted(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        conn.execute("CREATE TABLE t (id INTEGER)")
    policy = SourcePolicy.confined([tmp_path])
    assert resolve_source(f"sqlite:///{tmp_path / 'shop.db'}", policy).startswith("sqlite:///")
    assert resolve_source("sqlite://", policy) == "sqlite://"
