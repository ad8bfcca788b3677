from __future__ import annotations

import pytest

from service.evaluations.graders import Sample, compare, get_grader, summarize

QUESTIONS = [f"q{i}" for i in range(40)]
ANSWERS = {q: f"answer {i}" for i, q in enumerate(QUESTIONS)}


def _samples(correct: set[int], errors: set[int] = frozenset()) -> list[Sample]:
    return [
        Sample(
            output=None if i in errors else (ANSWERS[q] if i in correct else "wrong"),
            reference=ANSWERS[q],
            key=q,
        )
        for i, q in enumerate(QUESTIONS)
    ]


def test_summary_has_an_interval_per_metric_and_counts_errors() -> None:
    grader = get_grader({"type": "exact_match"})
    samples = _samples(correct=set(range(0, 40, 2)), errors={1})
    scores = [grader.grade(s) for s in samples]
    summary = summarize(grader, scores, samples, n_resamples=500)
    assert (summary.n, summary.n_graded, summary.n_errors) == (40, 39, 1)
    assert set(summary.metrics) == {"mean", "pass_rate"}
    ci = summary.metrics["pass_rate"]
    assert ci.estimate == pytest.approx(20 / 39)
    assert ci.low < 20 / 39 < ci.high and ci.n == 39


def test_paired_comparison_of_binary_grader_uses_mcnemar_and_lists_flips() -> None:
    grader = get_grader({"type": "exact_match"})
    base = _samples(correct=set(range(0, 12)))  # right on q0..q11
    tuned = _samples(correct=set(range(2, 26)), errors={39})  # loses q0, q1; gains q12..q25; q39 failed to generate
    scores_a = [grader.grade(s) for s in base]
    scores_b = [grader.grade(s) for s in tuned]
    result = compare(grader, QUESTIONS, scores_a, scores_b, base, tuned, n_resamples=1000)
    assert (result.n_paired, result.n_excluded) == (39, 1)
    assert result.flips is not None
    assert result.flips.a_only == ["q0", "q1"]
    assert result.flips.b_only == [f"q{i}" for i in range(12, 26)]
    assert result.mcnemar is not None and (result.mcnemar.a_only, result.mcnemar.b_only) == (2, 14)
    rate = result.metrics["pass_rate"]
    assert rate.test == "mcnemar-exact"
    assert rate.difference == pytest.approx(24 / 39 - 12 / 39)
    assert rate.p_value == pytest.approx(result.mcnemar.p_value)
    assert 0 < rate.low < rate.difference < rate.high
    assert result.metrics["mean"].test == "paired_bootstrap"


def test_paired_comparison_of_corpus_bleu() -> None:
    grader = get_grader({"type": "bleu"})
    refs = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(30)]
    a = [Sample(output=f"a quick fox {i} jumps over a dog", reference=r) for i, r in enumerate(refs)]
    b = [Sample(output=f"the quick brown fox number {i} jumps over the dog", reference=r) for i, r in enumerate(refs)]
    scores_a, scores_b = [grader.grade(s) for s in a], [grader.grade(s) for s in b]
    result = compare(grader, [str(i) for i in range(30)], scores_a, scores_b, a, b, n_resamples=500)
    bleu = result.metrics["bleu"]
    assert bleu.a == pytest.approx(grader.aggregate(scores_a, a)["bleu"])
    assert bleu.difference > 30 and bleu.low > 0 and bleu.p_value < 0.01
    assert result.flips is None and result.mcnemar is None
