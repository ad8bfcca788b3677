"""Agreement statistics: Cohen's kappa (plain or weighted) and Krippendorff's alpha, with bootstrap intervals.

Both are functions of a table summed over items, so they are built as the evaluation stats' sufficient statistics
(``service.evaluations.stats``): kappa of the two raters' contingency table (one one-hot row per item), alpha of the
coincidence matrix (each item's pairable values spread as Krippendorff defines). A bootstrap resample of items is then
a weighted sum of rows, and the intervals come from the same bootstrap helpers as every other metric.

Categories are integer codes 0..k-1 in their natural order (scores 1-5 are codes 0-4), which is what the ordinal
and interval distances read. An undefined figure (every rating in one category: chance agreement is 1, expected
disagreement 0) is NaN here and reported as null with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.evaluations.stats import SufficientStatistics, bootstrap_ci

AlphaMetric = Literal["nominal", "ordinal", "interval"]
KappaWeights = Literal["none", "quadratic"]

ONE_CATEGORY = "every rating falls in one category, so chance agreement is complete and the coefficient is undefined"
NO_PAIRS = "no item has ratings from two raters"


@dataclass(frozen=True)
class Estimate:
    """A figure with its interval; ``estimate`` None with ``undefined_reason`` when it is undefined."""

    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    method: str | None
    n: int
    n_resamples: int
    undefined_reason: str | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Cohen's kappa


def agreement_weights(k: int, weights: KappaWeights) -> np.ndarray:
    """Agreement weights w[i, j] (1 on the diagonal): 'none' counts exact matches only; 'quadratic' gives partial
    credit 1 - ((i - j) / (k - 1))^2, the usual choice for ordered scores."""
    if weights == "none" or k == 1:
        return np.eye(k)
    i, j = np.indices((k, k))
    return 1.0 - ((i - j) / (k - 1)) ** 2


def _kappa_metrics(k: int, weights: KappaWeights) -> dict[str, object]:
    w = agreement_weights(k, weights)

    def tables(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = sums.reshape(-1, k, k)
        return t, t.sum(axis=(1, 2))

    def agreement(sums: np.ndarray) -> np.ndarray:
        t, n = tables(sums)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n > 0, np.trace(t, axis1=1, axis2=2) / np.where(n > 0, n, 1), np.nan)

    def kappa(sums: np.ndarray) -> np.ndarray:
        t, n = tables(sums)
        safe_n = np.where(n > 0, n, 1)[:, None]
        p = t / safe_n[:, :, None]
        pa, pb = p.sum(axis=2), p.sum(axis=1)
        observed = (p * w).sum(axis=(1, 2))
        expected = np.einsum("mi,mj,ij->m", pa, pb, w)
        undefined = (n <= 0) | np.isclose(expected, 1.0, rtol=0, atol=1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(undefined, np.nan, (observed - expected) / np.where(undefined, 1, 1 - expected))

    return {"agreement": agreement, "kappa": kappa}


def kappa_statistics(
    a: Sequence[int], b: Sequence[int], k: int, weights: KappaWeights = "none"
) -> SufficientStatistics:
    """Two raters' codes on the same items: one one-hot cell of the k x k contingency table per item."""
    a_arr, b_arr = _codes(a, k, "a"), _codes(b, k, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"both raters need the same items: {a_arr.size} vs {b_arr.size}")
    rows = np.zeros((a_arr.size, k * k))
    rows[np.arange(a_arr.size), a_arr * k + b_arr] = 1.0
    return SufficientStatistics(rows, _kappa_metrics(k, weights))  # type: ignore[arg-type]


def clustered_kappa_statistics(
    pairs_per_item: Sequence[Sequence[tuple[int, int]]], k: int, weights: KappaWeights = "none"
) -> SufficientStatistics:
    """Kappa of rater a against every rating b gives an item (a grader's score against each reviewer's): an item's row
    holds all its pairs' cells, so the bootstrap resamples items with their ratings together."""
    rows = np.zeros((len(pairs_per_item), k * k))
    for i, pairs in enumerate(pairs_per_item):
        if pairs:
            a_arr = _codes([p[0] for p in pairs], k, "a")
            b_arr = _codes([p[1] for p in pairs], k, "b")
            np.add.at(rows[i], a_arr * k + b_arr, 1.0)
    return SufficientStatistics(rows, _kappa_metrics(k, weights))  # type: ignore[arg-type]


def cohen_kappa(a: Sequence[int], b: Sequence[int], k: int, weights: KappaWeights = "none") -> float:
    """Cohen's kappa of two raters (NaN when undefined)."""
    if len(a) == 0:
        return math.nan
    return kappa_statistics(a, b, k, weights).evaluate()["kappa"]


# ---------------------------------------------------------------------------------------------------------------------
# Krippendorff's alpha


def coincidences(values: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """Per unit, its contribution to the k x k coincidence matrix (flattened): every ordered pair of values from
    different raters, weighted 1 / (m_u - 1). Units with fewer than two values contribute nothing (not pairable)."""
    rows = np.zeros((len(values), k * k))
    for u, unit in enumerate(values):
        codes = _codes(unit, k, f"unit {u}")
        m = codes.size
        if m < 2:
            continue
        counts = np.bincount(codes, minlength=k).astype(np.float64)
        pairs = np.outer(counts, counts) - np.diag(counts)
        rows[u] = (pairs / (m - 1)).reshape(-1)
    return rows


def _squared_distances(n_c: np.ndarray, metric: AlphaMetric) -> np.ndarray:
    """delta^2 between categories, (m, k, k), from each resample's category totals n_c (m, k)."""
    m, k = n_c.shape
    if metric == "nominal":
        return np.broadcast_to(1.0 - np.eye(k), (m, k, k))
    if metric == "interval":
        i, j = np.indices((k, k))
        return np.broadcast_to(((i - j) ** 2).astype(np.float64), (m, k, k))
    # Ordinal: the number of values from c to k inclusive, less half of each end, squared (Krippendorff 2011).
    cum = np.cumsum(n_c, axis=1)
    i, j = np.indices((k, k))
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    between = cum[:, hi] - cum[:, lo] + n_c[:, lo]
    return (between - (n_c[:, i] + n_c[:, j]) / 2.0) ** 2


def _alpha_metric(k: int, metric: AlphaMetric) -> object:
    def alpha(sums: np.ndarray) -> np.ndarray:
        o = sums.reshape(-1, k, k)
        n_c = o.sum(axis=2)
        n = n_c.sum(axis=1)
        d2 = _squared_distances(n_c, metric)
        observed = (o * d2).sum(axis=(1, 2))
        expected = (n_c[:, :, None] * n_c[:, None, :] * d2).sum(axis=(1, 2))
        undefined = (n <= 1) | (expected <= 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(undefined, np.nan, 1.0 - (n - 1) * observed / np.where(undefined, 1, expected))

    return alpha


def alpha_statistics(
    values: Sequence[Sequence[int]], k: int, metrics: Sequence[AlphaMetric] = ("nominal",)
) -> SufficientStatistics:
    """Each unit's values (any number of raters, missing ones simply absent), as coincidence rows."""
    return SufficientStatistics(coincidences(values, k), {m: _alpha_metric(k, m) for m in metrics})  # type: ignore[misc]


def krippendorff_alpha(values: Sequence[Sequence[int]], k: int, metric: AlphaMetric = "nominal") -> float:
    """Krippendorff's alpha (NaN when undefined)."""
    if not values:
        return math.nan
    return alpha_statistics(values, k, (metric,)).evaluate()[metric]


# ---------------------------------------------------------------------------------------------------------------------
# Intervals


def estimates(
    stats: SufficientStatistics | None,
    names: Sequence[str],
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
    empty_reason: str = NO_PAIRS,
) -> dict[str, Estimate]:
    """Every metric of ``stats`` with its bootstrap interval over items (BCa, percentile where BCa is undefined).

    A metric undefined on the full data (NaN: every rating in one category) is an ``Estimate`` without numbers and
    with the reason; ``stats`` None or empty (nothing to compute over) gives each of ``names`` so, with
    ``empty_reason``.
    """
    if stats is None or stats.n == 0:
        return {name: _undefined(empty_reason, confidence, n_resamples, 0) for name in names}
    cis = bootstrap_ci(stats, confidence=confidence, n_resamples=n_resamples, method="bca", rng=seed)
    out: dict[str, Estimate] = {}
    for name in names:
        ci = cis[name]
        if not math.isfinite(ci.estimate):
            out[name] = _undefined(ONE_CATEGORY, confidence, n_resamples, stats.n)
            continue
        finite = math.isfinite(ci.low) and math.isfinite(ci.high)
        out[name] = Estimate(
            estimate=ci.estimate,
            low=ci.low if finite else None,
            high=ci.high if finite else None,
            confidence=confidence,
            method=ci.method if finite else None,
            n=stats.n,
            n_resamples=n_resamples,
        )
    return out


def _undefined(reason: str, confidence: float, n_resamples: int, n: int) -> Estimate:
    return Estimate(None, None, None, confidence, None, n, n_resamples, reason)


def _codes(values: Sequence[int], k: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= k):
        raise ValueError(f"{what}: codes must lie in 0..{k - 1}")
    return arr
