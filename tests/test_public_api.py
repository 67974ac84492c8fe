"""The top-level package's public surface is exactly ``gpuguard.__all__``, all documented."""

from __future__ import annotations

import inspect
import types

import pytest

import gpuguard


def _public_names() -> set[str]:
    """Names a user sees in ``dir(gpuguard)``, less subpackages and dunders.

    Every name of ``__all__`` is touched first: most are imported on first use.
    """
    for name in gpuguard.__all__:
        getattr(gpuguard, name)
    return {
        name
        for name in vars(gpuguard)
        if not name.startswith("_")
        # Subpackages (gpuguard.llm, gpuguard.testing, ...) become attributes once imported
        # anywhere; they are reached as modules, not re-exported names.
        and not isinstance(getattr(gpuguard, name), types.ModuleType)
    }


def test_public_names_are_exactly_all() -> None:
    assert _public_names() == set(gpuguard.__all__) - {"__version__"}


def test_all_has_no_duplicates() -> None:
    assert len(gpuguard.__all__) == len(set(gpuguard.__all__))


@pytest.mark.parametrize("name", sorted(set(gpuguard.__all__) - {"__version__"}))
def test_every_exported_name_exists_and_is_documented(name: str) -> None:
    assert hasattr(gpuguard, name), f"gpuguard.__all__ names a missing {name!r}"
    obj = getattr(gpuguard, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        # Its own docstring, not one inherited from a base class.
        assert (obj.__doc__ or "").strip(), f"gpuguard.{name} has no docstring"


def test_version_is_a_string() -> None:
    assert isinstance(gpuguard.__version__, str)
