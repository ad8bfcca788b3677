"""What one scan of a byte range accumulates, in a form that merges exactly with the scans of other ranges.

Everything here is bounded: issues are listed up to a cap per code (all counted), distributions are histograms of
integers (exact percentiles; at most about sqrt(2 * tokens in the file) distinct values), and dataset-level trackers
keep a fixed number of entries.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import orjson

from service.datasets.dedupe.minhash import Sketches
from service.datasets.validation.rules import RULES
from service.tokens import Counter, EncodingName, token_counter

EXCERPT_CHARS = 80
# Distinct system prompts tracked for the consistency check; beyond this the prompts are "varied" and not judged.
MAX_SYSTEM_PROMPTS = 64
SAMPLE_LINES = 20

Histogram = dict[int, int]
# (line, field, message, excerpt); line is local to the range until the merge offsets it.
IssueRow = tuple[int | None, str | None, str, str | None]


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line rendering of ``value`` for a report."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes):
        text = value[: limit * 4].decode("utf-8", "replace")
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = repr(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def digest(text: str) -> bytes:
    """A process-independent key for a string (``hash()`` differs between worker processes)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def hist_add(hist: Histogram, value: int) -> None:
    hist[value] = hist.get(value, 0) + 1


def hist_merge(into: Histogram, other: Histogram) -> None:
    for value, n in other.items():
        into[value] = into.get(value, 0) + n


class IssueCollector:
    """Counts every issue; keeps the first ``cap`` of each code (in line order within one range)."""

    __slots__ = ("cap", "counts", "listed")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.counts: dict[str, int] = {}
        self.listed: dict[str, list[IssueRow]] = {}

    def add(self, code: str, line: int | None, field: str | None, message: str, example: str | None = None) -> None:
        n = self.counts.get(code)
        if n is None:
            if code not in RULES:
                raise KeyError(f"validation emitted unregistered rule code {code!r}")
            n = 0
            self.listed[code] = []
        self.counts[code] = n + 1
        if n < self.cap:
            self.listed[code].append((line, field, message, example))

    def merge(self, other: IssueCollector, line_offset: int) -> None:
        """Append ``other`` (a later range) with its line numbers shifted by ``line_offset``."""
        for code, n in other.counts.items():
            have = self.counts.get(code, 0)
            self.counts[code] = have + n
            rows = self.listed.setdefault(code, [])
            room = self.cap - len(rows)
            if room > 0:
                for line, fld, msg, ex in other.listed.get(code, ())[:room]:
                    rows.append((None if line is None else line + line_offset, fld, msg, ex))


class TokenCounts:
    """Token counts of a string in the primary and (optionally) the other encoding, memoised.

    System prompts, tool definitions and role names repeat across examples; a FIFO cache bounded by characters
    avoids tokenizing them again. Counting is pure, so the cache never changes a result.
    """

    MAX_CACHED_CHARS = 2 * 1024 * 1024
    MAX_ITEM_CHARS = 64 * 1024

    def __init__(self, primary: EncodingName, other: EncodingName | None) -> None:
        self._primary: Counter = token_counter(primary)
        self._other: Counter | None = token_counter(other) if other else None
        self._cache: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._chars = 0

    @property
    def has_other(self) -> bool:
        return self._other is not None

    def count_many(self, texts: list[str]) -> tuple[list[int], list[int] | None]:
        """Tokens of each text in the primary and (when configured) the other encoding."""
        cache = self._cache
        n = len(texts)
        primary = [0] * n
        other_counts = [0] * n if self._other is not None else None
        misses: list[int] = []
        for i, text in enumerate(texts):
            hit = cache.get(text)
            if hit is None:
                misses.append(i)
            else:
                primary[i] = hit[0]
                if other_counts is not None:
                    other_counts[i] = hit[1]
        count = self._primary
        for i in misses:
            primary[i] = count(texts[i])
        if other_counts is not None:
            count = self._other  # type: ignore[assignment]
            for i in misses:
                other_counts[i] = count(texts[i])
        for i in misses:
            text = texts[i]
            size = len(text)
            if size <= self.MAX_ITEM_CHARS:
                cache[text] = (primary[i], other_counts[i] if other_counts is not None else 0)
                self._chars += size
        while self._chars > self.MAX_CACHED_CHARS:
            old, _ = cache.popitem(last=False)
            self._chars -= len(old)
        return primary, other_counts


@dataclass
class SystemPrompts:
    """Distinct system prompts: count, first lines and an excerpt each; gives up (``overflow``) past a bound."""

    groups: dict[bytes, list] = field(default_factory=dict)  # key -> [count, lines, excerpt]
    overflow: bool = False

    def add(self, text: str, line: int) -> None:
        if self.overflow:
            return
        key = digest(text)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= MAX_SYSTEM_PROMPTS:
                self.overflow = True
                self.groups.clear()
                return
            self.groups[key] = [1, [line], excerpt(text)]
            return
        group[0] += 1
        if len(group[1]) < SAMPLE_LINES:
            group[1].append(line)

    def merge(self, other: SystemPrompts, line_offset: int) -> None:
        if self.overflow:
            return
        if other.overflow:
            self.overflow = True
            self.groups.clear()
            return
        for key, (count, lines, ex) in other.groups.items():
            group = self.groups.get(key)
            shifted = [ln + line_offset for ln in lines]
            if group is None:
                if len(self.groups) >= MAX_SYSTEM_PROMPTS:
                    self.overflow = True
                    self.groups.clear()
                    return
                self.groups[key] = [count, shifted, ex]
            else:
                group[0] += count
                group[1].extend(shifted[: max(0, SAMPLE_LINES - len(group[1]))])


@dataclass
class FinalAnswers:
    """Whether every example ends with the same assistant text: keeps at most two distinct answers."""

    seen: dict[bytes, str] = field(default_factory=dict)
    examples: int = 0

    def add(self, text: str) -> None:
        self.examples += 1
        if len(self.seen) < 2:
            self.seen.setdefault(digest(text), excerpt(text))

    def merge(self, other: FinalAnswers) -> None:
        self.examples += other.examples
        for key, ex in other.seen.items():
            if len(self.seen) >= 2:
                break
            self.seen.setdefault(key, ex)


@dataclass
class RangeStats:
    """Statistics of the examples of one range (or, after merging, of the file)."""

    lines: int = 0
    examples: int = 0
    blank_lines: int = 0
    messages: int = 0
    counted_examples: int = 0
    missing_system: int = 0
    missing_user: int = 0
    over_limit: int = 0
    messages_per_example: Histogram = field(default_factory=dict)
    tokens_per_example: Histogram = field(default_factory=dict)
    other_tokens_per_example: Histogram = field(default_factory=dict)
    tokens_per_role: dict[str, Histogram] = field(default_factory=dict)
    other_over_limit: int = 0

    def merge(self, other: RangeStats) -> None:
        for name in ("lines", "examples", "blank_lines", "messages", "counted_examples", "missing_system"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.missing_user += other.missing_user
        self.over_limit += other.over_limit
        self.other_over_limit += other.other_over_limit
        hist_merge(self.messages_per_example, other.messages_per_example)
        hist_merge(self.tokens_per_example, other.tokens_per_example)
        hist_merge(self.other_tokens_per_example, other.other_tokens_per_example)
        for role, hist in other.tokens_per_role.items():
            hist_merge(self.tokens_per_role.setdefault(role, {}), hist)


@dataclass
class RangeResult:
    """Everything one range produced; ``lines`` (in ``stats``) is how many lines start in the range."""

    stats: RangeStats
    issues: IssueCollector
    system_prompts: SystemPrompts
    finals: FinalAnswers
    # Duplicate-detection sketches of the range's examples (line numbers local to the range), made in the worker
    # that parsed them: a few hundred bytes per example travel to the parent instead of the texts.
    sketches: list[Sketches] = field(default_factory=list)
