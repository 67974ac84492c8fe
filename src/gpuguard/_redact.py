r"""Secrets out of everything shown, control characters out of every log line.

:func:`redact` is the one masking function: every URL, error message and detail that reaches
a job, an event, a log line, the metrics or the page goes through it. It masks

- the password of ``scheme://user:password@host`` (``user:***@``);
- the value of every ``key=value`` whose key names a secret (``password``, ``pass``,
  ``passwd``, ``pwd``, ``sslpassword``, ``secret``, ``token``, ``api_key``, ``apikey``,
  ``access_key``, ``auth``, ``credential``, ``key``), in a URL query or a ``key=value``
  connection string alike;
- ``Bearer <token>``.

:func:`escape_control` makes a value safe for one log line: newlines and every other control
character become visible escapes (``\n``, ``\x1b``), so that no caller-chosen value (a model
name, a path) can start a forged line.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "escape_control", "redact"]

MASK = "***"
"""What a masked secret is replaced by."""

_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/:@?#]*):(?P<pw>[^\s@/?#]*)@")
_SECRET_KEY = (
    r"[\w.\-]*(?:password|passwd|pwd|pass|secret|token|api[_\-]?key|access[_\-]?key|auth"
    r"|credential)[\w.\-]*|key"
)
_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![\w.\-])(?:{_SECRET_KEY}))(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^&\s;,'\"]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def redact(text: str) -> str:
    """``text`` with every password, token and API key in it replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@" if m["pw"] else m[0], text)
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)


def escape_control(text: str) -> str:
    """``text`` on one line: control characters (newlines included) as visible escapes."""
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
