"""Scan one byte range of a JSONL file: parse each line, run the format's checks, accumulate a ``RangeResult``.

This runs in worker processes, so everything it needs travels in a small picklable ``ScanContext``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from api_schemas.dataset_report import DatasetFormat
from service.datasets.validation.checks import ExampleChecker
from service.datasets.validation.reader import TooLong, first_line_start, iter_lines
from service.datasets.validation.state import (
    FinalAnswers,
    IssueCollector,
    RangeResult,
    RangeStats,
    SystemPrompts,
    TokenCounts,
    excerpt,
)
from service.tokens import EncodingName

if TYPE_CHECKING:
    from service.datasets.dedupe.minhash import Sketches


@dataclass(frozen=True)
class ScanContext:
    path: str
    format: DatasetFormat
    primary: EncodingName
    other: EncodingName | None
    token_limit: int | None
    max_line_bytes: int
    max_depth: int
    max_issues_per_code: int
    duplicates: bool
    skip_prefix: int = 0  # bytes to skip at the start of the file (a UTF-8 BOM, reported separately)
    near_threshold: float = 0.85  # duplicate sketches are made for this threshold's LSH bands


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` (the top-level object is depth 1)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if type(node) is dict:
            stack.extend((child, depth + 1) for child in node.values() if type(child) in (dict, list))
        elif type(node) is list:
            stack.extend((child, depth + 1) for child in node if type(child) in (dict, list))
    return False


def _utf8_error(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line ({exc.reason})"
    return None


class _Counts:
    """One ``TokenCounts`` per thread and encoding pair: the vocabularies behind them are loaded once per process
    (``service.tokens`` caches them), while the small memo cache is per thread, so concurrent validations in one
    process (an API server's thread pool) never share a mutable cache."""

    local = threading.local()

    @classmethod
    def get(cls, primary: EncodingName, other: EncodingName | None) -> TokenCounts:
        cache: dict[tuple[str, str | None], TokenCounts] | None = getattr(cls.local, "cache", None)
        if cache is None:
            cache = cls.local.cache = {}
        key = (primary, other)
        counts = cache.get(key)
        if counts is None:
            counts = cache[key] = TokenCounts(primary, other)
        return counts


def prepare_counts(primary: EncodingName, other: EncodingName | None, duplicates: bool = False) -> None:
    """Load the tokenizers (and the duplicate sketcher's tables) now, e.g. before forking workers, so that they
    share the memory."""
    _Counts.get(primary, other)
    if duplicates:
        from service.datasets.dedupe import prepare

        prepare()


class RangeSketcher:
    """Sketches the examples of a range for duplicate detection as they are checked (the text is parsed once).

    Examples given with the byte offset of their line (JSONL) are sketched without their canonical text, with a
    candidate key that the duplicate finder confirms by reading the few candidates again (``exact_digests``);
    the others (CSV rows) by their canonical text.
    """

    def __init__(self, ctx: ScanContext, sketches: list[Sketches]) -> None:
        from service.datasets.canonical import canonical_example_text
        from service.datasets.dedupe import MinHashParams, Sketcher

        self._canonical = canonical_example_text
        self._sketcher = Sketcher(MinHashParams.for_threshold(ctx.near_threshold))
        self._out = sketches

    def add(self, line: int, obj: dict, offset: int | None = None) -> None:
        if offset is not None:
            full = self._sketcher.add_example(line, obj, offset)
        else:
            # The sketcher normalises texts to NFC itself, cheaply: skip the per-string NFC calls here.
            full = self._sketcher.add(line, self._canonical(obj, nfc=False))
        if full:
            self._out.append(self._sketcher.take())

    def flush(self) -> None:
        if len(self._sketcher):
            self._out.append(self._sketcher.take())


def new_result(ctx: ScanContext) -> tuple[RangeResult, ExampleChecker]:
    result = RangeResult(
        stats=RangeStats(),
        issues=IssueCollector(ctx.max_issues_per_code),
        system_prompts=SystemPrompts(),
        finals=FinalAnswers(),
    )
    checker = ExampleChecker(
        counts=_Counts.get(ctx.primary, ctx.other),
        issues=result.issues,
        stats=result.stats,
        token_limit=ctx.token_limit,
        system_prompts=result.system_prompts,
        finals=result.finals,
    )
    return result, checker


def scan_range(ctx: ScanContext, start: int, end: int | None) -> RangeResult:
    """Check the lines that start in ``[start, end)``; line numbers in the result are 1-based within the range."""
    result, checker = new_result(ctx)
    sketcher = RangeSketcher(ctx, result.sketches) if ctx.duplicates else None
    check = {
        DatasetFormat.chat: checker.chat,
        DatasetFormat.preference: checker.preference,
        DatasetFormat.prompt_completion: checker.prompt_completion,
    }[ctx.format]
    stats = result.stats
    add = result.issues.add
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    max_depth = ctx.max_depth
    line = 0
    with open(ctx.path, "rb") as f:
        begin = first_line_start(f, start, end) if start > 0 else ctx.skip_prefix
        if begin is None or (end is not None and begin >= end):
            return result
        offset = begin  # of the next line, for the duplicate finder to read candidates again
        for raw in iter_lines(f, begin, end, ctx.max_line_bytes):
            line += 1
            at = offset
            offset += (raw.length if type(raw) is TooLong else len(raw)) + 1
            if type(raw) is TooLong:
                add(
                    "line_too_long",
                    line,
                    None,
                    f"line is {raw.length:,} bytes, over the limit of {ctx.max_line_bytes:,}; skipped",
                )
                continue
            if not raw or raw.isspace():
                stats.blank_lines += 1
                add("blank_line", line, None, "blank line")
                continue
            try:
                obj = loads(raw)
            except decode_error as exc:
                bad_utf8 = _utf8_error(raw) if "UTF-8" in exc.msg or "surrogate" in exc.msg else None
                if bad_utf8 is not None:
                    add("invalid_utf8", line, None, bad_utf8, excerpt(raw))
                elif "depth" in exc.msg or "recursion" in exc.msg:
                    add("too_deep", line, None, f"nesting deeper than the parser allows ({exc.msg})")
                else:
                    add("invalid_json", line, None, f"invalid JSON at column {exc.colno}: {exc.msg}", excerpt(raw))
                continue
            if type(obj) is not dict:
                add("not_an_object", line, None, f"a line must be a JSON object, got {_kind(obj)}", excerpt(raw))
                continue
            if raw.count(b"{") + raw.count(b"[") > max_depth and json_depth_exceeds(obj, max_depth):
                add("too_deep", line, None, f"arrays/objects nest deeper than {max_depth} levels")
                continue
            stats.examples += 1
            check(obj, line)
            if sketcher is not None:
                sketcher.add(line, obj, at)
    checker.flush()
    if sketcher is not None:
        sketcher.flush()
    stats.lines = line
    return result


def exact_digests(path: str, offsets: np.ndarray) -> np.ndarray:
    """The exact-duplicate digests (uint64 (n, 2)) of the examples on the JSONL lines starting at ``offsets``: what
    ``Sketcher.add`` gives for their canonical texts. Only lines that parsed as objects are ever asked for."""
    from service.datasets.canonical import canonical_example_text
    from service.datasets.dedupe.minhash import exact_digest

    out = bytearray()
    with open(path, "rb") as f:
        for offset in offsets.tolist():
            f.seek(offset)
            try:
                obj = orjson.loads(f.readline())
                text = canonical_example_text(obj)
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise RuntimeError(f"{path} changed while it was being validated (byte {offset})") from exc
            out += exact_digest(text)
    return np.frombuffer(bytes(out), dtype="<u8").reshape(len(offsets), 2)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
