"""Token counts for usage figures and rate limits.

Exact counts come from the project's offline tiktoken loader (`service.tokens`) when it is importable; otherwise a
word-based estimate keeps the emulator usable on its own. Truncation for `max_tokens` uses the same source.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Protocol

_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


@functools.lru_cache(maxsize=4)
def _encoding(name: str) -> _Encoding | None:
    try:
        from service.tokens import get_encoding  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return get_encoding(name)  # type: ignore[arg-type]
    except Exception:
        # A broken or absent rank file must not take the emulator down; the estimate is good enough for a fake.
        return None


def exact_counting_available(encoding: str = "o200k_base") -> bool:
    return _encoding(encoding) is not None


def count(text: str, encoding: str = "o200k_base") -> int:
    enc = _encoding(encoding)
    if enc is not None:
        return len(enc.encode(text, disallowed_special=()))
    # Roughly what BPE yields on English prose: words and punctuation, long words split every ~4 characters.
    return sum(max(1, (len(piece) + 3) // 4) for piece in _WORDS.findall(text))


def truncate(text: str, max_tokens: int, encoding: str = "o200k_base") -> str:
    enc = _encoding(encoding)
    if enc is not None:
        ids = enc.encode(text, disallowed_special=())
        return text if len(ids) <= max_tokens else enc.decode(ids[:max_tokens])
    pieces = _WORDS.findall(text)
    out: list[str] = []
    used = 0
    for piece in pieces:
        cost = max(1, (len(piece) + 3) // 4)
        if used + cost > max_tokens:
            break
        out.append(piece)
        used += cost
    return " ".join(out)


def content_text(content: Any) -> str:
    """Text of a message `content`: a string, or a list of parts of which text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return json.dumps(content)


def count_messages(messages: list[dict], encoding: str = "o200k_base") -> int:
    """OpenAI's published estimate for chat input: 3 per message, its values, 1 per name, 3 for the reply primer."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "content":
                total += count(content_text(value), encoding)
            elif key == "tool_calls":
                total += count(json.dumps(value), encoding)
            elif isinstance(value, str):
                total += count(value, encoding)
            if key == "name":
                total += 1
    return total
