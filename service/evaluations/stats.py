"""Honest statistics for evaluation results: bootstrap confidence intervals and paired comparisons.

Metrics are described by *sufficient statistics*: one row of numbers per example whose column sums determine the
metric (a mean is ``[value, 1]``; corpus BLEU is sacreBLEU's n-gram counts; macro F1 is one-hot class counts). A
bootstrap resample is then a vector of multiplicities per example, and all resamples at once are one matrix product,
so thousands of resamples of corpus BLEU or macro F1 cost milliseconds instead of re-tokenising the corpus each time.
The same rows give exact jackknife (leave-one-out) values for BCa intervals: total minus one row.

Conventions: comparisons are "b minus a"; p-values are two-sided; every result says which method produced it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import numpy as np

from api_schemas.graders import CiMethod, ConfidenceInterval, Flips, McNemarResult, PairedDifference

McNemarMethod = Literal["auto", "exact", "mid-p", "chi2-cc"]

# Statistic of summed rows: maps an (m, k) array of column sums to m metric values.
SumsFunction = Callable[[np.ndarray], np.ndarray]
# Statistic of resampled indices: maps an (m, n) array of example indices to m metric values.
IndexFunction = Callable[[np.ndarray], np.ndarray]

# Above this many discordant pairs "auto" uses the chi-square approximation; it agrees with the exact test to well
# under 1e-3 there, and exact big-integer sums grow quadratically.
EXACT_MCNEMAR_MAX_DISCORDANT = 10_000
# Elements per resampling chunk (resamples x examples), bounding memory at a few tens of MB.
_CHUNK_ELEMENTS = 1 << 22
_NORMAL = NormalDist()


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a seed (int), an existing Generator, or None (seed 0: results stay reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


@dataclass(frozen=True)
class SufficientStatistics:
    """Per-example rows (n, k) and named metrics computed from column sums.

    Each metric function takes an (m, k) array of sums and returns m values; it must accept sums of any resample.
    """

    rows: np.ndarray
    metrics: Mapping[str, SumsFunction]
    column_names: Sequence[str] = field(default=())

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows, dtype=np.float64)
        if rows.ndim != 2:
            raise ValueError(f"rows must be a 2-D array (examples x statistics), got shape {rows.shape}")
        if not self.metrics:
            raise ValueError("at least one metric is required")
        object.__setattr__(self, "rows", rows)

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])

    def evaluate(self) -> dict[str, float]:
        """Every metric on the full data."""
        sums = self.rows.sum(axis=0, keepdims=True)
        return {name: float(fn(sums)[0]) for name, fn in self.metrics.items()}

    def take(self, indices: Sequence[int] | np.ndarray) -> SufficientStatistics:
        """The same metrics on a subset of the examples, e.g. the ones both candidates answered."""
        return SufficientStatistics(self.rows[np.asarray(indices, dtype=np.intp)], self.metrics, self.column_names)


def mean_statistics(values: Sequence[float] | np.ndarray, name: str = "mean") -> SufficientStatistics:
    """Sufficient statistics of a plain mean."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite numbers")
    rows = np.column_stack([v, np.ones_like(v)])
    return SufficientStatistics(rows, {name: _ratio_of_columns(0, 1)}, ("value", "count"))


def _ratio_of_columns(num: int, den: int) -> SumsFunction:
    def ratio(sums: np.ndarray) -> np.ndarray:
        d = sums[:, den]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, sums[:, num] / np.where(d > 0, d, 1.0), np.nan)

    return ratio


# ---------------------------------------------------------------------------------------------------------------------
# Resampling


def _chunks(n_resamples: int, n: int) -> list[int]:
    size = max(1, _CHUNK_ELEMENTS // max(n, 1))
    return [min(size, n_resamples - start) for start in range(0, n_resamples, size)]


def _resample_counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """A (b, n) matrix of how often each example occurs in each of b resamples of size n."""
    idx = rng.integers(0, n, size=(b, n))
    idx += (np.arange(b) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _bootstrap_sums(rows: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = rows.shape[0]
    return np.concatenate([_resample_counts(rng, b, n) @ rows for b in _chunks(n_resamples, n)], axis=0)


def _jackknife_sums(rows: np.ndarray) -> np.ndarray:
    return rows.sum(axis=0, keepdims=True) - rows


def _check_common(confidence: float, n_resamples: int, method: str) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be at least 100, got {n_resamples}")
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")


def _interval(
    estimate: float, boot: np.ndarray, jack: np.ndarray | None, confidence: float, method: str
) -> tuple[float, float, CiMethod]:
    """Percentile or BCa interval from bootstrap replicates (and jackknife values for BCa's acceleration)."""
    boot = boot[np.isfinite(boot)]
    if boot.size == 0 or not math.isfinite(estimate):
        return math.nan, math.nan, "percentile"
    alpha = (1 - confidence) / 2
    quantiles = np.array([alpha, 1 - alpha])
    used: CiMethod = "percentile"
    if method == "bca" and jack is not None:
        adjusted = _bca_quantiles(estimate, boot, jack[np.isfinite(jack)], quantiles)
        if adjusted is not None:
            quantiles, used = adjusted, "bca"
    low, high = np.quantile(boot, quantiles)
    return float(low), float(high), used


def _bca_quantiles(estimate: float, boot: np.ndarray, jack: np.ndarray, quantiles: np.ndarray) -> np.ndarray | None:
    if np.ptp(boot) == 0:
        # Every replicate is the same value: there is no distribution to correct.
        return None
    # Bias correction: where the estimate sits in the bootstrap distribution (ties count half, as in scipy).
    below = np.count_nonzero(boot < estimate) + 0.5 * np.count_nonzero(boot == estimate)
    share = below / boot.size
    if share <= 0 or share >= 1 or jack.size < 2:
        # All replicates on one side (e.g. a metric pinned at 0 or 1): z0 is infinite, BCa is undefined.
        return None
    z0 = _NORMAL.inv_cdf(share)
    d = jack.mean() - jack
    denom = 6.0 * float(np.sum(d**2)) ** 1.5
    accel = float(np.sum(d**3)) / denom if denom > 0 else 0.0
    out = []
    for q in quantiles:
        z = _NORMAL.inv_cdf(float(q))
        shifted = z0 + (z0 + z) / (1 - accel * (z0 + z))
        out.append(_NORMAL.cdf(shifted))
    return np.array(out)


# ---------------------------------------------------------------------------------------------------------------------
# Confidence intervals


def bootstrap_ci(
    stats: SufficientStatistics,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: CiMethod = "bca",
    rng: np.random.Generator | int | None = 0,
) -> dict[str, ConfidenceInterval]:
    """Bootstrap intervals for every metric of ``stats``, all from the same resamples."""
    _check_common(confidence, n_resamples, method)
    if stats.n == 0:
        raise ValueError("cannot bootstrap zero examples")
    gen = as_generator(rng)
    boot_sums = _bootstrap_sums(stats.rows, n_resamples, gen)
    jack_sums = _jackknife_sums(stats.rows) if method == "bca" and stats.n > 1 else None
    estimates = stats.evaluate()
    out: dict[str, ConfidenceInterval] = {}
    for name, fn in stats.metrics.items():
        jack = fn(jack_sums) if jack_sums is not None else None
        low, high, used = _interval(estimates[name], fn(boot_sums), jack, confidence, method)
        out[name] = ConfidenceInterval(
            estimate=estimates[name],
            low=low,
            high=high,
            confidence=confidence,
            method=used,
            n=stats.n,
            n_resamples=n_resamples,
        )
    return out


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: CiMethod = "bca",
    rng: np.random.Generator | int | None = 0,
) -> ConfidenceInterval:
    """Bootstrap interval for the mean of ``values``."""
    stats = mean_statistics(values)
    return bootstrap_ci(stats, confidence=confidence, n_resamples=n_resamples, method=method, rng=rng)["mean"]


def bootstrap_ci_indices(
    n: int,
    statistic: IndexFunction,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: CiMethod = "percentile",
    rng: np.random.Generator | int | None = 0,
) -> ConfidenceInterval:
    """Bootstrap interval for any statistic of a data set of ``n`` examples.

    ``statistic`` receives an (m, size) integer array, each row the example indices of one data set, and returns m
    values; row ``arange(n)`` is the original data. Use it for aggregates without sufficient statistics. BCa needs
    n leave-one-out evaluations (O(n^2) work), so it is for moderate n.
    """
    _check_common(confidence, n_resamples, method)
    if n <= 0:
        raise ValueError("cannot bootstrap zero examples")
    gen = as_generator(rng)
    estimate = float(np.asarray(statistic(np.arange(n)[None, :]), dtype=np.float64)[0])
    boot = np.concatenate(
        [np.asarray(statistic(gen.integers(0, n, size=(b, n))), dtype=np.float64) for b in _chunks(n_resamples, n)]
    )
    jack = None
    if method == "bca" and n > 1:
        # Row i of the leave-one-out matrix is arange(n) without i.
        full = np.arange(n)
        parts = []
        step = max(1, _CHUNK_ELEMENTS // n)
        for start in range(0, n, step):
            drop = np.arange(start, min(start + step, n))
            keep = full[None, :] != drop[:, None]
            loo = np.broadcast_to(full, keep.shape)[keep].reshape(drop.size, n - 1)
            parts.append(np.asarray(statistic(loo), dtype=np.float64))
        jack = np.concatenate(parts)
    low, high, used = _interval(estimate, boot, jack, confidence, method)
    return ConfidenceInterval(
        estimate=estimate, low=low, high=high, confidence=confidence, method=used, n=n, n_resamples=n_resamples
    )


# ---------------------------------------------------------------------------------------------------------------------
# Paired comparisons


def paired_bootstrap(
    stats_a: SufficientStatistics,
    stats_b: SufficientStatistics,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: CiMethod = "percentile",
    rng: np.random.Generator | int | None = 0,
) -> dict[str, PairedDifference]:
    """Paired bootstrap of b - a for every metric the two share, rows aligned by example.

    Each resample draws the same examples for both candidates, so the interval reflects the variance of the
    difference, not of each score. p-value: share of resampled differences, shifted to a true difference of 0, at
    least as far from 0 as the observed one, with the +1 correction that keeps it above 0 (Davison & Hinkley 1997).
    """
    _check_common(confidence, n_resamples, method)
    if stats_a.n != stats_b.n:
        raise ValueError(f"paired statistics need the same examples: a has {stats_a.n}, b has {stats_b.n}")
    if stats_a.n == 0:
        raise ValueError("cannot compare zero examples")
    names = [name for name in stats_a.metrics if name in stats_b.metrics]
    if not names:
        raise ValueError("a and b share no metric")
    gen = as_generator(rng)
    ka = stats_a.rows.shape[1]
    joined = np.concatenate([stats_a.rows, stats_b.rows], axis=1)
    boot = _bootstrap_sums(joined, n_resamples, gen)
    jack = _jackknife_sums(joined) if method == "bca" and stats_a.n > 1 else None
    est_a, est_b = stats_a.evaluate(), stats_b.evaluate()
    out: dict[str, PairedDifference] = {}
    for name in names:
        fa, fb = stats_a.metrics[name], stats_b.metrics[name]
        diffs = fb(boot[:, ka:]) - fa(boot[:, :ka])
        jack_diff = fb(jack[:, ka:]) - fa(jack[:, :ka]) if jack is not None else None
        observed = est_b[name] - est_a[name]
        low, high, used = _interval(observed, diffs, jack_diff, confidence, method)
        out[name] = PairedDifference(
            metric=name,
            a=est_a[name],
            b=est_b[name],
            difference=observed,
            low=low,
            high=high,
            confidence=confidence,
            p_value=_centred_p_value(observed, diffs),
            method=used,
            n=stats_a.n,
            n_resamples=n_resamples,
        )
    return out


def _centred_p_value(observed: float, diffs: np.ndarray) -> float:
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0 or not math.isfinite(observed):
        return math.nan
    if observed == 0:
        return 1.0
    # Tolerance so that replicates equal to the observed difference up to float noise count as "as extreme".
    tol = 1e-12 * max(1.0, abs(observed))
    extreme = np.count_nonzero(np.abs(diffs - observed) >= abs(observed) - tol)
    return float(min(1.0, (extreme + 1) / (diffs.size + 1)))


def _as_bools(values: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype != np.bool_:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(f"{name} must hold booleans (or 0/1)")
        arr = arr.astype(bool)
    return arr.reshape(-1)


def mcnemar_test(
    passed_a: Sequence[bool] | np.ndarray, passed_b: Sequence[bool] | np.ndarray, *, method: McNemarMethod = "auto"
) -> McNemarResult:
    """McNemar's test for paired binary outcomes.

    ``auto`` uses the exact binomial test (never anti-conservative) up to ``EXACT_MCNEMAR_MAX_DISCORDANT`` discordant
    pairs and the chi-square test with continuity correction above, where the two agree closely. ``mid-p`` is the
    less conservative exact variant recommended by Fagerland et al. (2013).
    """
    a, b = _as_bools(passed_a, "passed_a"), _as_bools(passed_b, "passed_b")
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same length: {a.size} vs {b.size}")
    a_only = int(np.count_nonzero(a & ~b))
    b_only = int(np.count_nonzero(~a & b))
    both = int(np.count_nonzero(a & b))
    neither = int(a.size - a_only - b_only - both)
    discordant = a_only + b_only
    if method == "auto":
        method = "exact" if discordant <= EXACT_MCNEMAR_MAX_DISCORDANT else "chi2-cc"
    statistic: float | None = None
    if discordant == 0:
        p = 1.0
    elif method == "exact":
        p = min(1.0, 2 * _binomial_half_cdf(min(a_only, b_only), discordant))
    elif method == "mid-p":
        k = min(a_only, b_only)
        p = min(1.0, 2 * _binomial_half_cdf(k, discordant) - _binomial_half_pmf(k, discordant))
    elif method == "chi2-cc":
        statistic = max(0, abs(a_only - b_only) - 1) ** 2 / discordant
        # Survival function of chi-square with one degree of freedom.
        p = math.erfc(math.sqrt(statistic / 2))
    else:
        raise ValueError(f"unknown McNemar method {method!r}")
    return McNemarResult(
        n=int(a.size),
        both_passed=both,
        a_only=a_only,
        b_only=b_only,
        neither_passed=neither,
        statistic=statistic,
        p_value=float(p),
        method=method,
    )


def _binomial_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (big integers; Python's int division rounds correctly)."""
    total, term = 0, 1
    for i in range(k + 1):
        total += term
        term = term * (n - i) // (i + 1)
    return total / (1 << n)


def _binomial_half_pmf(k: int, n: int) -> float:
    return math.comb(n, k) / (1 << n)


def flipped_examples(
    keys: Sequence[str], passed_a: Sequence[bool] | np.ndarray, passed_b: Sequence[bool] | np.ndarray
) -> Flips:
    """Keys of examples where exactly one of a and b passed, in the order given."""
    a, b = _as_bools(passed_a, "passed_a"), _as_bools(passed_b, "passed_b")
    if not (len(keys) == a.size == b.size):
        raise ValueError(f"keys, passed_a and passed_b differ in length: {len(keys)}, {a.size}, {b.size}")
    return Flips(
        a_only=[k for k, x, y in zip(keys, a, b, strict=True) if x and not y],
        b_only=[k for k, x, y in zip(keys, a, b, strict=True) if y and not x],
    )
