from __future__ import annotations

import random

import pytest

from service.evaluations.graders import Sample, get_grader
from service.evaluations.graders.rouge import lcs_length, rouge_l, tokenize


def _lcs_table(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_rouge_score_readme_example() -> None:
    # rouge-score's README: rougeL of these two is P=0.625, R=0.5556, F=0.5882 (LCS "the quick brown jumps the").
    cand = tokenize("The quick brown dog jumps on the log.")
    ref = tokenize("The quick brown fox jumps over the lazy dog")
    p, r, f, lcs = rouge_l(cand, ref)
    assert (lcs, p, r) == (5, 5 / 8, pytest.approx(5 / 9))
    assert f == pytest.approx(2 * (5 / 8) * (5 / 9) / (5 / 8 + 5 / 9))


def test_hand_examples() -> None:
    assert rouge_l(["a", "b", "c", "d"], ["a", "c", "d", "b"])[:3] == (0.75, 0.75, 0.75)
    assert rouge_l([], ["a"]) == (0.0, 0.0, 0.0, 0)
    assert rouge_l(["x"], ["y"]) == (0.0, 0.0, 0.0, 0)
    # beta weighs recall: P = 1, R = 1/2, F_beta=2 = 5 * 0.5 / (0.5 + 4) = 5/9.
    assert rouge_l(["a"], ["a", "b"], beta=2.0)[2] == pytest.approx(5 / 9)


def test_bit_parallel_lcs_equals_the_dynamic_programme() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == _lcs_table(a, b)


def test_unicode_tokens_and_char_unit() -> None:
    assert tokenize("Straße, naïve! 東京") == ["strasse", "naïve", "東京"]
    grader = get_grader({"type": "rouge_l", "unit": "char"})
    score = grader.grade(Sample(output="東京都", reference="東京"))
    assert score.value == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_best_reference_counts_and_threshold() -> None:
    grader = get_grader({"type": "rouge_l", "pass_threshold": 0.5})
    score = grader.grade(Sample(output="the cat sat", reference=["a dog ran", "the cat sat down"]))
    assert score.details["reference_index"] == 1
    assert score.value == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert score.passed is True
