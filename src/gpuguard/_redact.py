r"""Secrets out of everything shown, control characters out of every log line.

:func:`mask_url` masks one URL the way a driver reads it: it is parsed with SQLAlchemy's
own URL grammar (``scheme://user:password@host:port/database?query``, the password being
everything up to the ``@``, ``/``, ``?`` and ``#`` included), and rebuilt with the password
and the value of every secret query option (``?password=pw,more`` whole, up to the next
``&``) replaced by ``***``. What the caller wrote is otherwise kept as written.

:func:`redact` is the one masking function for text: every error message and detail that
reaches a job, an event, a log line, the metrics or the page goes through it. It masks

- every URL in the text (up to the next whitespace) through :func:`mask_url`;
- the value of every ``key=value`` whose key names a secret (``password``, ``pass``,
  ``passwd``, ``pwd``, ``sslpassword``, ``secret``, ``token``, ``api_key``, ``apikey``,
  ``access_key``, ``auth``, ``credential``, ``key``) outside a URL, as in a libpq
  connection string (the value up to the next whitespace, or quoted);
- ``Bearer <token>``.

A password with whitespace in it is masked whole only where a URL field is masked as one
value (:func:`mask_url`); inside free text a URL ends at the first whitespace.

:func:`operator_only` marks a log record whose message holds the operator's detail (a
driver's own words: "connection refused", ``role "x" does not exist``): what callers are
shown of it is the public sentence it carries.

:func:`escape_control` makes a value safe for one log line: newlines and every other control
character become visible escapes (``\n``, ``\x1b``), so that no caller-chosen value (a model
name, a path) can start a forged line.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = [
    "MASK",
    "PUBLIC_MESSAGE",
    "escape_control",
    "is_secret_key",
    "mask_url",
    "operator_only",
    "redact",
]

MASK = "***"
"""What a masked secret is replaced by."""

_SECRET_KEY = (
    r"[\w.\-]*(?:password|passwd|pwd|pass|secret|token|api[_\-]?key|access[_\-]?key|auth"
    r"|credential)[\w.\-]*|key"
)
_SECRET_NAME = re.compile(rf"(?:{_SECRET_KEY})", re.IGNORECASE)
_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![\w.\-])(?:{_SECRET_KEY}))(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|\S+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://\S*")
# SQLAlchemy's URL grammar (sqlalchemy.engine.url._parse_url), which decides what a driver
# is given: a user without ':' or '/', then a password that runs to the first '@'.
_USERINFO = re.compile(r"(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


PUBLIC_MESSAGE = "gpuguard_public_message"
"""The log record attribute holding the words a caller may see in place of the message."""


def operator_only(public: str) -> dict[str, str]:
    """``extra=`` for a log record whose message is for the operator only.

    The operator's handlers (the terminal, the journal) get the whole message; anything
    that shows log lines to callers (``GET /admin/logs``) shows ``public`` instead.
    """
    return {PUBLIC_MESSAGE: public}


def is_secret_key(name: str) -> bool:
    """True when an option named ``name`` holds a secret (``password``, ``api_key``...)."""
    return _SECRET_NAME.fullmatch(name) is not None


def mask_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***``."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return _mask_pairs(url)
    userinfo = _USERINFO.match(rest)
    user = None if userinfo is None else userinfo["user"]
    secret = userinfo is not None and userinfo["password"] is not None
    if userinfo is not None:
        rest = rest[userinfo.end() :]
    location, question, query = rest.partition("?")
    host, slash, database = location.partition("/")
    if "@" in host:  # an unencoded '@' in the password: what precedes the last one is secret
        user, secret, host = user or "", True, host.rpartition("@")[2]
    head = "" if user is None else f"{user}{':' + MASK if secret else ''}@"
    masked_query = "&".join(_mask_pair(pair) for pair in query.split("&")) if question else ""
    return f"{scheme}://{head}{host}{slash}{database}{question}{masked_query}"


def _mask_pair(pair: str) -> str:
    key, equals, _value = pair.partition("=")
    return f"{key}={MASK}" if equals and is_secret_key(unquote_plus(key).strip()) else pair


def _mask_pairs(text: str) -> str:
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)


def redact(text: str) -> str:
    """``text`` with every password, token and API key in it replaced by ``***``."""
    if not text:
        return text
    pieces: list[str] = []
    last = 0
    for found in _URL_IN_TEXT.finditer(text):
        pieces.append(_mask_pairs(text[last : found.start()]))
        pieces.append(mask_url(found[0]))
        last = found.end()
    pieces.append(_mask_pairs(text[last:]))
    return "".join(pieces)


def escape_control(text: str) -> str:
    """``text`` on one line: control characters (newlines included) as visible escapes."""
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
