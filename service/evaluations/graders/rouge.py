"""ROUGE-L: the F-measure of the longest common subsequence (LCS) of output and reference tokens.

Written here rather than taken from ``rouge-score``: that package has been unmaintained since 2022, pulls in nltk and
absl, and its tokenizer keeps only ASCII letters and digits, so any non-English text scores 0. The metric itself is
small: P = LCS/len(output), R = LCS/len(reference), F = (1 + b^2) P R / (R + b^2 P), best reference wins, as in
Lin (2004) and rouge-score's ``rougeL`` (with b = 1 and its default lower-casing the two agree on ASCII text).
The LCS length uses the bit-parallel algorithm of Allison & Dix (1986) / Hyyrö (2004): O(n * m / word) instead of the
O(n * m) table, so long answers stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

from api_schemas.graders import RougeLGraderSpec, Score
from service.evaluations.graders.base import Grader, Sample
from service.evaluations.graders.registry import register_grader

# Letters and digits of every script, so "naïve", "Straße" and "東京" stay tokens.
_WORD = regex.compile(r"[\p{L}\p{N}\p{M}]+")


def tokenize(text: str, *, unit: str = "word", ignore_case: bool = True) -> list[str]:
    if ignore_case:
        text = text.casefold()
    if unit == "char":
        return [ch for ch in text if not ch.isspace()]
    return _WORD.findall(text)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences."""
    if not a or not b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    # Bit i of masks[t] is set when b[i] == t; the state word tracks where the LCS can still grow.
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        m = masks.get(token)
        if m is None:
            continue
        u = v & m
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(candidate: Sequence[str], reference: Sequence[str], beta: float = 1.0) -> tuple[float, float, float, int]:
    """(precision, recall, f_measure, lcs) of token sequences; all 0 when either is empty."""
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0, 0.0, 0.0, 0
    p = lcs / len(candidate)
    r = lcs / len(reference)
    b2 = beta * beta
    return p, r, (1 + b2) * p * r / (r + b2 * p), lcs


@register_grader
class RougeLGrader(Grader[RougeLGraderSpec]):
    spec_type = RougeLGraderSpec
    description = "ROUGE-L F-measure (0-1) of the longest common token subsequence; the best reference counts."

    def _grade(self, sample: Sample) -> Score:
        unit, ignore_case = self.spec.unit, self.spec.ignore_case
        cand = tokenize(sample.output or "", unit=unit, ignore_case=ignore_case)
        best: tuple[float, float, float, int] | None = None
        best_index = 0
        for i, ref in enumerate(sample.references):
            result = rouge_l(cand, tokenize(ref, unit=unit, ignore_case=ignore_case), self.spec.beta)
            if best is None or result[2] > best[2]:
                best, best_index = result, i
        assert best is not None  # _precheck guarantees a reference
        p, r, f, lcs = best
        details = {"precision": p, "recall": r, "lcs": lcs, "reference_index": best_index}
        return Score(value=f, passed=self._threshold(f), details=details)
