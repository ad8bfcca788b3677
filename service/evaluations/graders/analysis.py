"""Grader results with honest statistics: every aggregate with a bootstrap interval, and paired comparisons of two
candidates on the same examples (difference, interval, p-value, flipped examples)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from api_schemas.graders import GraderComparison, GraderSummary, MetricComparison, Score
from service.evaluations.graders.base import Grader, Sample
from service.evaluations.stats import (
    CiMethod,
    ConfidenceInterval,
    as_generator,
    bootstrap_ci,
    flipped_examples,
    mcnemar_test,
    paired_bootstrap,
)


def _binary_metric(grader: Grader[Any]) -> str | None:
    if not grader.is_binary:
        return None
    return "accuracy" if grader.type == "classification" else "pass_rate"


def summarize(
    grader: Grader[Any],
    scores: Sequence[Score],
    samples: Sequence[Sample],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: CiMethod = "bca",
    rng: np.random.Generator | int | None = 0,
) -> GraderSummary:
    """Aggregates of one candidate with a bootstrap interval for each metric (over the graded samples)."""
    if len(scores) != len(samples):
        raise ValueError(f"scores and samples differ in length: {len(scores)} vs {len(samples)}")
    aggregate = grader.aggregate(scores, samples)
    graded = [i for i, s in enumerate(scores) if s.value is not None]
    metrics: dict[str, ConfidenceInterval] = {}
    if graded:
        stats = grader.statistics([scores[i] for i in graded], [samples[i] for i in graded])
        metrics = bootstrap_ci(stats, confidence=confidence, n_resamples=n_resamples, method=method, rng=rng)
    details = {k: v for k, v in aggregate.items() if k not in metrics and k not in ("n", "n_graded", "n_errors")}
    return GraderSummary(
        grader=grader.name,
        type=grader.type,
        n=len(scores),
        n_graded=len(graded),
        n_errors=len(scores) - len(graded),
        metrics=metrics,
        details=details,
    )


def compare(
    grader: Grader[Any],
    keys: Sequence[str],
    scores_a: Sequence[Score],
    scores_b: Sequence[Score],
    samples_a: Sequence[Sample],
    samples_b: Sequence[Sample],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: CiMethod = "percentile",
    mcnemar_method: str = "auto",
    rng: np.random.Generator | int | None = 0,
) -> GraderComparison:
    """Candidate b against candidate a on the same examples (all sequences aligned by example).

    Differences are b - a with a paired-bootstrap interval. For the pass rate of a binary grader the p-value is
    McNemar's test (exact by default) and the flipped examples are listed; other metrics get the paired bootstrap's.
    """
    n = len(keys)
    if not (len(scores_a) == len(scores_b) == len(samples_a) == len(samples_b) == n):
        raise ValueError("keys, scores and samples of a and b must be aligned and of equal length")
    paired = [i for i in range(n) if scores_a[i].value is not None and scores_b[i].value is not None]
    result = GraderComparison(
        grader=grader.name, type=grader.type, n_paired=len(paired), n_excluded=n - len(paired), metrics={}
    )
    if not paired:
        return result
    gen = as_generator(rng)
    sa = grader.statistics([scores_a[i] for i in paired], [samples_a[i] for i in paired])
    sb = grader.statistics([scores_b[i] for i in paired], [samples_b[i] for i in paired])
    diffs = paired_bootstrap(sa, sb, confidence=confidence, n_resamples=n_resamples, method=method, rng=gen)
    binary_metric = _binary_metric(grader)
    if binary_metric is not None:
        passed_a = [bool(scores_a[i].passed) for i in paired]
        passed_b = [bool(scores_b[i].passed) for i in paired]
        result.mcnemar = mcnemar_test(passed_a, passed_b, method=mcnemar_method)  # type: ignore[arg-type]
        result.flips = flipped_examples([keys[i] for i in paired], passed_a, passed_b)
    for name, d in diffs.items():
        use_mcnemar = name == binary_metric and result.mcnemar is not None
        result.metrics[name] = MetricComparison(
            metric=name,
            a=d.a,
            b=d.b,
            difference=d.difference,
            low=d.low,
            high=d.high,
            confidence=d.confidence,
            p_value=result.mcnemar.p_value if use_mcnemar else d.p_value,  # type: ignore[union-attr]
            test=f"mcnemar-{result.mcnemar.method}" if use_mcnemar else "paired_bootstrap",  # type: ignore[union-attr]
            ci_method=d.method,
            n=d.n,
        )
    return result
