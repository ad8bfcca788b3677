"""Text helpers shared by graders: normalisation, code-fence stripping, strict JSON parsing."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from api_schemas.graders import TextNormalization

_WHITESPACE = re.compile(r"\s+")
# A whole output wrapped in one Markdown fence, optionally with a language tag (```json ... ```).
_FENCE = re.compile(r"\A\s*```[\w.+-]*[ \t]*\n(?P<body>.*?)\n?[ \t]*```\s*\Z", re.DOTALL)


def normalize(text: str, options: TextNormalization) -> str:
    if options.unicode_nfkc:
        text = unicodedata.normalize("NFKC", text)
    if options.ignore_case:
        text = text.casefold()
    if options.ignore_punctuation:
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    if options.collapse_whitespace:
        text = _WHITESPACE.sub(" ", text)
    if options.strip:
        text = text.strip()
    return text


def strip_code_fence(text: str) -> str:
    """The body of a fenced block when the whole text is one; otherwise the text unchanged."""
    m = _FENCE.match(text)
    return m.group("body") if m else text


class JsonParseError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise JsonParseError(f"{name} is not valid JSON")


def parse_json_strict(text: str) -> Any:
    """Parse RFC 8259 JSON: unlike ``json.loads`` this rejects NaN and Infinity. Errors say line and column."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise JsonParseError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values by JSON type: 1 == 1.0, but true != 1 (Python would say it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
