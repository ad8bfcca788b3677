"""Token bookkeeping of a range's examples: their strings are queued as the examples are checked and counted in
batches, then each example's total (the cookbook formula of ``checks``) is recorded in line order."""

from __future__ import annotations

from service.datasets.validation.state import IssueCollector, RangeStats, TokenCounts, excerpt, hist_add
from service.tokens import SPECIAL_TOKEN_RE

# The cookbook formula: per example, per message, per name.
PRIMER = 3
PER_MESSAGE = 3
PER_NAME = 1

# Strings are counted in batches, one encoding at a time: alternating two tokenizers string by string evicts their
# vocabularies from the CPU caches and costs about 20%.
FLUSH_CHARS = 2 << 20
FLUSH_EXAMPLES = 2048

# One example's token bookkeeping until its batch is counted: (role or None, constant tokens, ids of counted strings).
Part = tuple[str | None, int, list[int]]


class TokenBatch:
    """Queues the strings of examples for counting and records each example's counts once its batch is counted."""

    def __init__(
        self, *, counts: TokenCounts, issues: IssueCollector, stats: RangeStats, token_limit: int | None
    ) -> None:
        self.counts = counts
        self.issues = issues
        self.stats = stats
        self.token_limit = token_limit
        self._ids: dict[str, int] = {}
        self._texts: list[str] = []
        self._chars = 0
        self._pending: list[tuple[int, list[Part], int]] = []  # (line, parts, messages)

    def _special(self, text: str, line: int, where: str) -> None:
        match = SPECIAL_TOKEN_RE.search(text)
        if match is not None:
            self.issues.add(
                "special_token_text",
                line,
                where,
                f"contains the special-token text {match.group()}; OpenAI fails the whole job on it",
                excerpt(text[max(0, match.start() - 20) : match.end() + 20]),
            )

    def _ref(self, text: str, line: int, where: str) -> int:
        """Check ``text`` for special tokens and queue it for counting; returns its id in the batch."""
        if "<|" in text:
            self._special(text, line, where)
        i = self._ids.get(text)
        if i is None:
            i = self._ids[text] = len(self._texts)
            self._texts.append(text)
            self._chars += len(text)
        return i

    def _pend(self, line: int, parts: list[Part], n_messages: int) -> None:
        self._pending.append((line, parts, n_messages))
        if self._chars >= FLUSH_CHARS or len(self._pending) >= FLUSH_EXAMPLES:
            self.flush()

    def flush(self) -> None:
        """Count the queued strings and record the queued examples (in line order)."""
        if self._pending:
            primary, other = self.counts.count_many(self._texts)
            role_hists = self.stats.tokens_per_role
            for line, parts, n_messages in self._pending:
                p = o = 0
                for role, const, ids in parts:
                    mp = const
                    for i in ids:
                        mp += primary[i]
                    p += mp
                    if other is not None:
                        o += const
                        for i in ids:
                            o += other[i]
                    if role is not None:
                        hist = role_hists.get(role)
                        if hist is None:
                            hist = role_hists[role] = {}
                        hist[mp] = hist.get(mp, 0) + 1
                self._record(line, p, o if other is not None else None, n_messages)
        self._ids = {}
        self._texts = []
        self._chars = 0
        self._pending = []

    def _record(self, line: int, p: int, o: int | None, n_messages: int) -> None:
        stats = self.stats
        stats.counted_examples += 1
        stats.messages += n_messages
        hist_add(stats.messages_per_example, n_messages)
        hist_add(stats.tokens_per_example, p)
        if o is not None:
            hist_add(stats.other_tokens_per_example, o)
        limit = self.token_limit
        if limit is not None:
            if p > limit:
                stats.over_limit += 1
                self.issues.add(
                    "over_token_limit",
                    line,
                    None,
                    f"{p} tokens, over the per-example limit of {limit}: the last {p - limit} tokens are truncated",
                )
            if o is not None and o > limit:
                stats.other_over_limit += 1
