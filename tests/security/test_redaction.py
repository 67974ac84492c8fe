"""The one masking function and the one log escape, on what they will meet."""

from __future__ import annotations

import logging

import pytest

from gpuguard._redact import escape_control, redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        (
            "mysql+pymysql://u:p%40ss@h:3306/db?charset=utf8",
            "mysql+pymysql://u:***@h:3306/db?charset=utf8",
        ),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        (
            "postgresql://u@h/db?sslmode=require&pass=pw",
            "postgresql://u@h/db?sslmode=require&pass=***",
        ),
        ("x://h/?sslpassword=pw", "x://h/?sslpassword=***"),
        ("https://api.example/v1?api_key=sk-123&q=1", "https://api.example/v1?api_key=***&q=1"),
        ("https://api.example/v1?apikey=sk-123", "https://api.example/v1?apikey=***"),
        ("https://h/?key=abc&access_token=t", "https://h/?key=***&access_token=***"),
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
        ("Authorization: Bearer sk-abc.def", "Authorization: Bearer ***"),
        (
            "could not connect to postgresql://127.0.0.1:1/db",
            "could not connect to postgresql://127.0.0.1:1/db",
        ),
        ("monkey=banana keyboard=qwerty", "monkey=banana keyboard=qwerty"),
        ("", ""),
    ],
)
def test_secrets_are_masked_and_nothing_else(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_control_characters_become_visible_escapes() -> None:
    assert escape_control("x\n hung: op=chat\r\t\x1b[31m\x00\u2028") == (
        "x\\n hung: op=chat\\r\\t\\x1b[31m\\x00\\u2028"
    )
    assert escape_control("plain ünïcode text") == "plain ünïcode text"


def test_every_gpuguard_logger_writes_one_line_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    logging.getLogger("gpuguard.anything.new").info(
        "op=%s model=%s held=%.3fs n=%d", "chat", "m\nforged line", 1.5, 3
    )
    logging.getLogger("gpuguard").warning("url %s", "postgresql://u:pw@h/db?password=pw")
    logging.getLogger("gpuguard.x").error("no args\nsecond line")
    logging.getLogger("someone.else").info("left\nalone")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "op=chat model=m\\nforged line held=1.500s n=3",
        "url postgresql://u:***@h/db?password=***",
        "no args\\nsecond line",
        "left\nalone",
    ]
