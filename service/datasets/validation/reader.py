"""Lines of a byte range of a file, in bounded memory.

A file is cut into byte ranges that workers read independently. A line belongs to the range in which it *starts*,
so every line is read exactly once and the line numbers of a range follow from the counts of the ranges before it.
A line longer than the limit is never assembled: its bytes are counted while scanning to the next newline, and a
``TooLong`` marker stands in for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TooLong:
    """Stands for a line of ``length`` bytes (without its newline) that exceeded the limit."""

    length: int


def first_line_start(f: BinaryIO, offset: int, end: int | None = None, block: int = BLOCK) -> int | None:
    """The position of the first line that starts in ``[offset, end)`` (None when no line does).

    Only the range itself is scanned: the ranges inside one huge line find nothing and stop at once, instead of each
    reading to the end of that line.
    """
    if offset == 0:
        return 0
    f.seek(offset - 1)
    pos = offset - 1
    while end is None or pos < end - 1:
        want = block if end is None else min(block, end - 1 - pos)
        data = f.read(want)
        if not data:
            return None
        i = data.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(data)
    return None


def iter_lines(
    f: BinaryIO, start: int, end: int | None, max_line_bytes: int, block: int = BLOCK
) -> Iterator[bytes | TooLong]:
    """Lines (without ``\\n``) starting in ``[start, end)``; ``start`` must be a line start, ``end=None`` means EOF.

    Memory: one block plus at most ``max_line_bytes`` of a pending line.
    """
    f.seek(start)
    block_start = start
    pieces: list[bytes] = []
    pending = 0  # bytes of the current line seen so far (also while skipping an over-long one)
    skipping = False
    while True:
        data = f.read(block)
        if not data:
            if pending or skipping:
                if skipping:
                    yield TooLong(pending)
                else:
                    yield b"".join(pieces)
            return
        i = 0
        n = len(data)
        while True:
            j = data.find(b"\n", i)
            if j < 0:
                rest = n - i
                if not skipping and pending + rest > max_line_bytes:
                    skipping = True
                    pieces.clear()
                if not skipping:
                    pieces.append(data[i:] if i else data)
                pending += rest
                break
            seg = j - i
            if skipping or pending + seg > max_line_bytes:
                yield TooLong(pending + seg)
                skipping = False
            elif pieces:
                pieces.append(data[i:j])
                yield b"".join(pieces)
            else:
                yield data[i:j]
            pieces.clear()
            pending = 0
            i = j + 1
            if end is not None and block_start + i >= end:
                return
        block_start += n
