from __future__ import annotations

import math

import numpy as np
import pytest

from service.evaluations.stats import (
    SufficientStatistics,
    bootstrap_ci,
    bootstrap_ci_indices,
    bootstrap_mean_ci,
    flipped_examples,
    mcnemar_test,
    mean_statistics,
    paired_bootstrap,
)


def _pairs(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


def test_mcnemar_exact_hand_values() -> None:
    # 10 vs 2 discordant: P(X <= 2 | n=12, p=1/2) = (1 + 12 + 66) / 4096, two-sided doubles it.
    result = mcnemar_test(*_pairs(10, 2, both=30, neither=8))
    assert (result.n, result.a_only, result.b_only, result.both_passed, result.neither_passed) == (50, 10, 2, 30, 8)
    assert result.method == "exact"
    assert result.p_value == pytest.approx(158 / 4096, rel=1e-12)
    # Mid-p subtracts P(X = 2) = 66/4096 once.
    assert mcnemar_test(*_pairs(10, 2), method="mid-p").p_value == pytest.approx(92 / 4096, rel=1e-12)
    # Chi-square with continuity: (|10-2|-1)^2/12 = 4.0833, p = 0.04331 (chi-square table, 1 d.f.).
    chi = mcnemar_test(*_pairs(10, 2), method="chi2-cc")
    assert chi.statistic == pytest.approx(49 / 12)
    assert chi.p_value == pytest.approx(0.04331, abs=5e-5)


def test_mcnemar_edge_cases() -> None:
    assert mcnemar_test(*_pairs(0, 0, both=5)).p_value == 1.0
    assert mcnemar_test(*_pairs(4, 4)).p_value == 1.0
    assert mcnemar_test(*_pairs(4, 4), method="mid-p").p_value == pytest.approx(1.0)
    assert mcnemar_test(*_pairs(0, 6)).p_value == pytest.approx(2 / 64)
    # Symmetric in a and b.
    assert mcnemar_test(*_pairs(2, 10)).p_value == mcnemar_test(*_pairs(10, 2)).p_value
    with pytest.raises(ValueError, match="same length"):
        mcnemar_test([True], [True, False])


def test_mcnemar_auto_switches_to_chi_square_for_large_counts() -> None:
    result = mcnemar_test(*_pairs(6000, 5200))
    assert result.method == "chi2-cc"
    exact = mcnemar_test(*_pairs(6000, 5200), method="exact")
    assert result.p_value == pytest.approx(exact.p_value, rel=0.05)


def test_mcnemar_matches_scipy_binomtest() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for a_only, b_only in [(10, 2), (3, 9), (25, 17), (0, 7), (120, 90)]:
        expected = scipy_stats.binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue
        assert mcnemar_test(*_pairs(a_only, b_only)).p_value == pytest.approx(expected, rel=1e-9)


def test_flipped_examples() -> None:
    flips = flipped_examples(["a", "b", "c", "d"], [True, False, True, False], [False, True, True, False])
    assert flips.a_only == ["a"] and flips.b_only == ["b"]


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_interval_covers_true_mean_in_simulation(method: str) -> None:
    rng = np.random.default_rng(2024)
    trials, covered = 200, 0
    for _ in range(trials):
        data = rng.binomial(1, 0.7, size=80).astype(float)
        ci = bootstrap_mean_ci(data, n_resamples=1000, method=method, rng=rng)
        covered += ci.low <= 0.7 <= ci.high
    # Nominal 95%; with 200 trials the binomial spread is about +-3 points.
    assert 0.89 <= covered / trials <= 0.99


def test_bca_covers_skewed_mean_and_beats_nothing_worse_than_percentile() -> None:
    rng = np.random.default_rng(11)
    trials = 150
    hits = {"percentile": 0, "bca": 0}
    for _ in range(trials):
        data = rng.exponential(1.0, size=40)
        for method in hits:
            ci = bootstrap_mean_ci(data, n_resamples=1000, method=method, rng=rng)
            assert ci.method == method
            hits[method] += ci.low <= 1.0 <= ci.high
    assert hits["bca"] / trials >= 0.88
    assert hits["bca"] >= hits["percentile"] - 5


def test_bca_matches_normal_theory_for_normal_data() -> None:
    data = np.random.default_rng(5).normal(10.0, 2.0, size=400)
    ci = bootstrap_mean_ci(data, n_resamples=4000, method="bca", rng=1)
    half = 1.96 * data.std(ddof=1) / math.sqrt(data.size)
    assert ci.estimate == pytest.approx(data.mean())
    assert ci.low == pytest.approx(data.mean() - half, abs=0.03)
    assert ci.high == pytest.approx(data.mean() + half, abs=0.03)


def test_constant_data_gives_a_point_interval() -> None:
    ci = bootstrap_mean_ci([1.0] * 30, rng=0)
    assert (ci.low, ci.estimate, ci.high) == (1.0, 1.0, 1.0)
    assert ci.method == "percentile"  # BCa is undefined when every replicate equals the estimate


def test_seeded_results_are_reproducible() -> None:
    data = np.random.default_rng(0).normal(size=50)
    assert bootstrap_mean_ci(data, rng=42) == bootstrap_mean_ci(data, rng=42)
    assert bootstrap_mean_ci(data, rng=42) != bootstrap_mean_ci(data, rng=43)


def test_index_statistic_agrees_with_sufficient_statistics_path() -> None:
    data = np.random.default_rng(9).normal(size=70)
    for method in ("percentile", "bca"):
        via_sums = bootstrap_mean_ci(data, n_resamples=500, method=method, rng=4)
        via_indices = bootstrap_ci_indices(
            data.size, lambda idx: data[idx].mean(axis=1), n_resamples=500, method=method, rng=4
        )
        assert via_indices.low == pytest.approx(via_sums.low)
        assert via_indices.high == pytest.approx(via_sums.high)


def test_index_statistic_for_a_median() -> None:
    data = np.random.default_rng(3).exponential(size=101)
    ci = bootstrap_ci_indices(data.size, lambda idx: np.median(data[idx], axis=1), method="bca", rng=0)
    assert ci.low < np.median(data) < ci.high


def test_ratio_metric_from_sufficient_statistics() -> None:
    # Tokens-weighted accuracy: sum(correct) / sum(weight), a ratio estimator that a plain mean would get wrong.
    rows = np.array([[1, 2], [0, 1], [3, 3], [1, 4]], dtype=float)
    stats = SufficientStatistics(rows, {"ratio": lambda s: s[:, 0] / s[:, 1]})
    assert stats.evaluate() == {"ratio": 0.5}
    ci = bootstrap_ci(stats, n_resamples=300, rng=0)["ratio"]
    assert ci.low <= 0.5 <= ci.high


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(8)
    a = rng.binomial(1, 0.55, size=300).astype(float)
    improved = a.copy()
    improved[rng.choice(np.flatnonzero(a == 0), size=45, replace=False)] = 1.0  # b fixes 45 of a's misses
    result = paired_bootstrap(mean_statistics(a), mean_statistics(improved), rng=0)["mean"]
    assert result.difference == pytest.approx(45 / 300)
    assert result.low > 0 and result.p_value < 0.001
    same = paired_bootstrap(mean_statistics(a), mean_statistics(a.copy()), rng=0)["mean"]
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    shuffled = rng.permutation(a)  # same distribution, unrelated pairing
    null = paired_bootstrap(mean_statistics(a), mean_statistics(shuffled), rng=0)["mean"]
    assert null.low <= 0 <= null.high and null.p_value > 0.05


def test_paired_bootstrap_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(mean_statistics([1.0, 0.0]), mean_statistics([1.0]))


def test_parameter_validation() -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="zero examples"):
        bootstrap_mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean_ci([1.0, float("nan")])


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_bootstrap_matches_scipy_exactly_with_the_same_generator(method: str) -> None:
    # scipy.stats.bootstrap draws resamples the same way (Generator.integers over (resamples, n)), so with one seed
    # the two must agree to rounding, which checks the BCa bias and acceleration terms independently.
    scipy_stats = pytest.importorskip("scipy.stats")
    data = np.random.default_rng(1).exponential(size=60)
    expected = scipy_stats.bootstrap((data,), np.mean, n_resamples=5000, method=method, rng=7).confidence_interval
    ours = bootstrap_mean_ci(data, n_resamples=5000, method=method.lower(), rng=7)
    assert (ours.low, ours.high) == pytest.approx((expected.low, expected.high), rel=1e-9)
