"""BLEU and chrF against reference scores computed by sacreBLEU 2.6.0 itself (its README example and the values
``sacrebleu.sentence_bleu`` / ``corpus_score`` print for these sentences), not by our code."""

from __future__ import annotations

import pytest

from service.evaluations.graders import Sample, get_grader, summarize

REFS = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]
HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
SAMPLES = [Sample(output=h, reference=[REFS[0][i], REFS[1][i]], key=f"s{i}") for i, h in enumerate(HYPS)]


def _grade(spec: dict, samples: list[Sample] = SAMPLES):
    grader = get_grader(spec)
    scores = [grader.grade(s) for s in samples]
    return grader, scores, grader.aggregate(scores, samples)


def test_bleu_corpus_and_sentence_match_sacrebleu() -> None:
    _, scores, agg = _grade({"type": "bleu"})
    assert agg["bleu"] == pytest.approx(48.530827009929865, abs=1e-9)  # README: BLEU = 48.53
    assert [s.value for s in scores] == pytest.approx([100.0, 14.794015674776452, 29.071536848410968], abs=1e-9)
    assert agg["corpus_detail"] == {
        "precisions": [82.3529, 50.0, 45.4545, 37.5],
        "bp": 0.9429,
        "sys_len": 17,
        "ref_len": 18,
    }
    assert agg["signature"].startswith("nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp")


def test_chrf_and_chrf_plus_plus_match_sacrebleu() -> None:
    _, scores, agg = _grade({"type": "chrf"})
    assert agg["chrf"] == pytest.approx(59.72751782684763, abs=1e-9)  # README: chrF2 = 59.73
    assert [s.value for s in scores] == pytest.approx([100.0, 35.34635301425291, 51.87740799504779], abs=1e-9)
    _, _, agg_pp = _grade({"type": "chrf", "word_order": 2})
    assert agg_pp["chrf"] == pytest.approx(59.15310444399262, abs=1e-9)


def test_bleu_options_lowercase_and_char_tokenizer() -> None:
    samples = [
        Sample(output="THE CAT sat on the mat.", reference="the cat sat on the mat."),
        Sample(output="A quick brown fox.", reference="The quick brown fox jumps."),
    ]
    assert _grade({"type": "bleu"}, samples)[2]["bleu"] == pytest.approx(48.14754070762452, abs=1e-9)
    assert _grade({"type": "bleu", "lowercase": True}, samples)[2]["bleu"] == pytest.approx(71.59400385649793, abs=1e-9)
    assert _grade({"type": "bleu", "tokenize": "char"}, samples)[2]["bleu"] == pytest.approx(59.7566302445567, abs=1e-9)


def test_pass_threshold_makes_bleu_binary() -> None:
    grader, scores, agg = _grade({"type": "bleu", "pass_threshold": 20})
    assert grader.is_binary
    assert [s.passed for s in scores] == [True, False, True]
    assert agg["pass_rate"] == pytest.approx(2 / 3)


def test_bootstrap_interval_of_corpus_bleu_contains_estimate() -> None:
    samples = SAMPLES * 10
    grader, scores, agg = _grade({"type": "bleu"}, samples)
    summary = summarize(grader, scores, samples, n_resamples=500, rng=1)
    ci = summary.metrics["bleu"]
    assert ci.estimate == pytest.approx(48.530827009929865)  # corpus BLEU is unchanged by repeating the corpus
    assert 0 < ci.low < ci.estimate < ci.high < 100
    assert summary.details["corpus_detail"] == agg["corpus_detail"]


def test_missing_output_and_reference_are_errors_not_zeros() -> None:
    grader = get_grader({"type": "bleu"})
    assert grader.grade(Sample(output=None, reference="x")).error == "no output to grade"
    assert "needs a reference" in (grader.grade(Sample(output="x")).error or "")
    scores = [grader.grade(Sample(output=None, reference="x")), grader.grade(SAMPLES[0])]
    agg = grader.aggregate(scores, [Sample(output=None, reference="x"), SAMPLES[0]])
    assert (agg["n"], agg["n_graded"], agg["n_errors"]) == (2, 1, 1)
    assert agg["bleu"] == pytest.approx(100.0)
