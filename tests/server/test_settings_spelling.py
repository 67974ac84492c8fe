"""A setting spelt wrongly is an error that shows the right spelling, never ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuguard import ConfigError
from gpuguard.settings import load_settings


@pytest.mark.parametrize(
    ("variable", "spelling"),
    [
        ("GPUGUARD_SERVER_PORT", "GPUGUARD_SERVER__PORT"),
        ("GPUGUARD_GUARD_SCOPE", "GPUGUARD_GUARD__SCOPE"),
        ("gpuguard_llm_backend", "GPUGUARD_LLM__BACKEND"),
    ],
)
def test_one_underscore_after_a_section_is_an_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, spelling: str
) -> None:
    monkeypatch.setenv(variable, "9000")
    with pytest.raises(ConfigError, match=f"{variable}: unknown setting; did you mean {spelling}"):
        load_settings()


def test_an_invalid_scope_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUGUARD_GUARD__SCOPE", "bogus")
    with pytest.raises(ConfigError, match=r"guard\.scope: Input should be 'process', 'host'"):
        load_settings()


def test_variables_that_are_not_settings_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUGUARD_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("GPUGUARD_DATA_DIR", "/tmp/x")
    assert load_settings().data_dir == Path("/tmp/x")


@pytest.mark.parametrize("line", ["server.port=9000", "GPUGUARD_SERVER_PORT=9000"])
def test_a_dotenv_line_in_another_spelling_is_told_the_right_one(tmp_path: Path, line: str) -> None:
    config = tmp_path / "gpuguard.env"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "did you mean GPUGUARD_SERVER__PORT (or [server] port in a TOML file)?" in message
    assert "'server'?" not in message
