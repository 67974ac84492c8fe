"""The helpers behind the HTTP layer's promise of valid text out."""

from __future__ import annotations

import json
import os

from gpuguard.server._text import JsonResponse, without_lone_surrogates


def test_without_lone_surrogates() -> None:
    assert without_lone_surrogates("plain") == "plain"
    assert without_lone_surrogates("x\udc00\ud83d\ude00y\ud800") == "x\ufffd\U0001f600y\ufffd"
    assert without_lone_surrogates("\U0001f600") == "\U0001f600"


def test_json_response_writes_text_that_is_not_utf8() -> None:
    name = os.fsdecode(b"caf\xe9.txt")  # a Latin-1 file name, decoded with surrogateescape
    rendered = bytes(JsonResponse({"path": name, "word": "caf\u00e9"}).body)
    assert json.loads(rendered) == {"path": name, "word": "caf\u00e9"}
