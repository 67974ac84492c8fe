"""docs/compatibility.md names a test for each cell: every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "compatibility.md"
# `server/test_x.py::test_name`, `::test_name` (same file as the one before), `server/test_x.py`
REFERENCE = re.compile(r"`((?:[\w/]+\.py)?)(?:::(\w+))?`")


def test_every_test_the_table_names_exists() -> None:
    named = 0
    current: Path | None = None
    for path, test in REFERENCE.findall(TABLE.read_text()):
        if not path and not test:
            continue
        if path:
            current = ROOT / "tests" / path
            assert current.is_file(), f"docs/compatibility.md names a missing {path}"
        if test:
            assert current is not None
            assert f"def {test}(" in current.read_text(), f"no {test} in {current.name}"
        named += 1
    assert named >= 15
