"""Word diffs of two answers, for showing flipped examples side by side."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

# Words and the whitespace after them stay together, so a changed word is marked without its neighbours' spacing.
_TOKENS = re.compile(r"\S+\s*|\s+")

Op = Literal["same", "removed", "added"]


@dataclass(frozen=True)
class Piece:
    op: Op
    text: str


def tokens(text: str) -> list[str]:
    return _TOKENS.findall(text)


def word_diff(a: str | None, b: str | None) -> tuple[list[Piece], list[Piece]]:
    """Both sides as pieces: on the left what b dropped is ``removed``; on the right what b added is ``added``."""
    ta, tb = tokens(a or ""), tokens(b or "")
    # Compare words without trailing spacing so "yes" and "yes\n" count as the same word.
    matcher = difflib.SequenceMatcher(a=[t.strip() for t in ta], b=[t.strip() for t in tb], autojunk=False)
    left: list[Piece] = []
    right: list[Piece] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            left.append(Piece("same", "".join(ta[i1:i2])))
            right.append(Piece("same", "".join(tb[j1:j2])))
            continue
        if i2 > i1:
            left.append(Piece("removed", "".join(ta[i1:i2])))
        if j2 > j1:
            right.append(Piece("added", "".join(tb[j1:j2])))
    return left, right
