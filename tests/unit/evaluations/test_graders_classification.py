"""Classification metrics against values computed by hand.

Eight samples over cat/dog/bird; one prediction ("fish") is outside the label set.
Confusion (rows true, columns cat dog bird <other>): cat [2 1 0 0], dog [1 1 0 0], bird [0 0 2 1].
cat: P 2/3 R 2/3 F1 2/3; dog: P 1/2 R 1/2 F1 1/2; bird: P 1 R 2/3 F1 4/5.
Accuracy 5/8; macro P 13/18, R 11/18, F1 59/90; micro P 5/7, R 5/8, F1 2/3.
"""

from __future__ import annotations

import pytest

from service.evaluations.graders import GraderConfigError, Sample, get_grader, summarize

PAIRS = [
    ("cat", "cat"),
    ("cat", "CAT "),
    ("cat", "dog"),
    ("dog", "Dog"),
    ("dog", "cat"),
    ("bird", "bird"),
    ("bird", "fish"),
    ("bird", "bird"),
]
SAMPLES = [Sample(output=pred, reference=true, key=f"k{i}") for i, (true, pred) in enumerate(PAIRS)]
SPEC = {"type": "classification", "labels": ["cat", "dog", "bird"], "normalization": {"ignore_case": True}}


def test_per_sample_and_aggregate_metrics() -> None:
    grader = get_grader(SPEC)
    scores = [grader.grade(s) for s in SAMPLES]
    assert [s.passed for s in scores] == [True, True, False, True, False, True, False, True]
    assert scores[1].details["predicted"] == "cat"
    assert scores[6].details["predicted"] is None
    agg = grader.aggregate(scores, SAMPLES)
    assert agg["accuracy"] == pytest.approx(5 / 8)
    assert agg["macro_precision"] == pytest.approx(13 / 18)
    assert agg["macro_recall"] == pytest.approx(11 / 18)
    assert agg["macro_f1"] == pytest.approx(59 / 90)
    assert agg["micro_f1"] == pytest.approx(2 / 3)
    per_class = agg["per_class"]
    assert per_class["cat"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3, "predicted": 3}
    )
    assert per_class["dog"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2})
    assert per_class["bird"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3, "predicted": 2}
    )
    cm = agg["confusion_matrix"]
    assert cm["labels"] == ["cat", "dog", "bird"]
    assert cm["predicted_labels"] == ["cat", "dog", "bird", "<other>"]
    assert cm["matrix"] == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 1]]


def test_labels_default_to_distinct_references() -> None:
    grader = get_grader({"type": "classification", "normalization": {"ignore_case": True}})
    scores = [grader.grade(s) for s in SAMPLES]
    agg = grader.aggregate(scores, SAMPLES)
    assert agg["confusion_matrix"]["labels"] == ["bird", "cat", "dog"]
    assert agg["macro_f1"] == pytest.approx(59 / 90)
    # "fish" is not a reference label, so it lands in <other> as with an explicit label set.
    assert agg["confusion_matrix"]["matrix"] == [[2, 0, 0, 1], [0, 2, 1, 0], [0, 1, 1, 0]]


def test_bootstrap_intervals_for_macro_f1_bracket_the_estimate() -> None:
    grader = get_grader(SPEC)
    scores = [grader.grade(s) for s in SAMPLES * 5]
    summary = summarize(grader, scores, SAMPLES * 5, n_resamples=400, rng=3)
    for name in ("accuracy", "macro_f1", "micro_f1"):
        ci = summary.metrics[name]
        assert ci.low <= ci.estimate <= ci.high
    assert summary.metrics["macro_f1"].estimate == pytest.approx(59 / 90)
    assert summary.details["confusion_matrix"]["matrix"] == [[10, 5, 0, 0], [5, 5, 0, 0], [0, 0, 10, 5]]


def test_reference_outside_labels_is_a_sample_error() -> None:
    grader = get_grader(SPEC)
    score = grader.grade(Sample(output="cat", reference="horse"))
    assert score.value is None and "not one of the grader's labels" in (score.error or "")


def test_labels_colliding_after_normalisation_are_rejected() -> None:
    with pytest.raises(GraderConfigError, match="equal after normalisation"):
        get_grader({"type": "classification", "labels": ["Cat", "cat"], "normalization": {"ignore_case": True}})
