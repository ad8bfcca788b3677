"""Agreement statistics against values computed by hand (the arithmetic is in the comments) and against the worked
example in Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability"."""

from __future__ import annotations

import math

import pytest

from service.reviews.agreement import (
    NO_PAIRS,
    ONE_CATEGORY,
    agreement_weights,
    alpha_statistics,
    clustered_kappa_statistics,
    cohen_kappa,
    coincidences,
    estimates,
    kappa_statistics,
    krippendorff_alpha,
)


def _pairs(table: dict[tuple[int, int], int]) -> tuple[list[int], list[int]]:
    a, b = [], []
    for (i, j), count in table.items():
        a += [i] * count
        b += [j] * count
    return a, b


def test_cohen_kappa_two_categories():
    # 50 items, rater a vs rater b (1 = pass):  both pass 20, a only 5, b only 10, both fail 15.
    # p_o = (20 + 15) / 50 = 0.7; a passes 25/50 = 0.5, b passes 30/50 = 0.6;
    # p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5;  kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    a, b = _pairs({(1, 1): 20, (1, 0): 5, (0, 1): 10, (0, 0): 15})
    assert cohen_kappa(a, b, 2) == pytest.approx(0.4)
    assert kappa_statistics(a, b, 2).evaluate()["agreement"] == pytest.approx(0.7)


def test_cohen_kappa_is_symmetric_and_one_for_perfect_agreement():
    a, b = _pairs({(1, 1): 20, (1, 0): 5, (0, 1): 10, (0, 0): 15})
    assert cohen_kappa(b, a, 2) == pytest.approx(cohen_kappa(a, b, 2))
    assert cohen_kappa([0, 1, 1, 0, 2], [0, 1, 1, 0, 2], 3) == pytest.approx(1.0)


def test_quadratic_weighted_kappa():
    # k = 3, weights w_ij = 1 - (i - j)^2 / 4: w_01 = w_12 = 0.75, w_02 = 0.
    # a = [0, 1, 2], b = [0, 2, 2]: cells (0,0), (1,2), (2,2), one each, N = 3.
    # p_o = (1 + 0.75 + 1) / 3 = 0.91667. Margins: a = (1/3, 1/3, 1/3), b = (1/3, 0, 2/3).
    # p_e = sum_ij a_i b_j w_ij = 1/3 * sum_j b_j (sum_i w_ij) = 1/3 * (1/3 * 1.75 + 0 * 2.5 + 2/3 * 1.75) = 0.58333.
    # kappa_w = (0.91667 - 0.58333) / (1 - 0.58333) = 0.33333 / 0.41667 = 0.8.
    assert agreement_weights(3, "quadratic")[0].tolist() == [1.0, 0.75, 0.0]
    assert cohen_kappa([0, 1, 2], [0, 2, 2], 3, "quadratic") == pytest.approx(0.8)
    # Unweighted: p_o = 2/3, p_e = 1/9 + 0 + 2/9 = 1/3, kappa = (2/3 - 1/3) / (2/3) = 0.5.
    assert cohen_kappa([0, 1, 2], [0, 2, 2], 3) == pytest.approx(0.5)


def test_kappa_of_a_grader_against_every_rating_of_an_item():
    # Item 1: the grader scores 5 (code 4), two humans 5 and 4 -> cells (4,4), (4,3); item 2: grader 1, human 1 -> (0,0).
    # N = 3, weights w_ij = 1 - (i - j)^2 / 16: p_o = (1 + 15/16 + 1) / 3 = 141/144.
    # Margins: grader (code 0: 1/3, code 4: 2/3), humans (0: 1/3, 3: 1/3, 4: 1/3).
    # p_e = 1/3 * (1/3 * 1 + 1/3 * 7/16 + 1/3 * 0) + 2/3 * (1/3 * 0 + 1/3 * 15/16 + 1/3 * 1) = 85/144.
    # kappa_w = (141 - 85) / (144 - 85) = 56/59; exact agreement 2 of 3 pairs.
    stats = clustered_kappa_statistics([[(4, 4), (4, 3)], [(0, 0)]], 5, "quadratic")
    assert stats.n == 2  # the bootstrap resamples items, each with all its ratings
    assert stats.evaluate() == pytest.approx({"agreement": 2 / 3, "kappa": 56 / 59})


def test_kappa_undefined_when_both_raters_use_one_category():
    # Every rating "pass": p_o = p_e = 1, kappa = 0/0.
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1], 2))
    out = estimates(
        kappa_statistics([1, 1, 1], [1, 1, 1], 2), ("agreement", "kappa"), confidence=0.95, n_resamples=200, seed=0
    )
    assert out["agreement"].estimate == 1.0
    assert out["kappa"].estimate is None and out["kappa"].low is None and out["kappa"].undefined_reason == ONE_CATEGORY
    # One rater varies: p_e = 2/3 * 1 + 1/3 * 0 < 1, so kappa is defined (and 0: no agreement beyond chance).
    assert cohen_kappa([1, 1, 0], [1, 1, 1], 2) == pytest.approx(0.0)


def test_coincidence_matrix_and_nominal_alpha_by_hand():
    # Units [0,0], [1,1], [0,1]: each pair of values counts both ways, divided by m_u - 1 = 1.
    # o = [[2, 1], [1, 2]]; n_0 = n_1 = 3, n = 6.
    # alpha = 1 - (n - 1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k = 1 - 5 * 2 / (2 * 3 * 3) = 1 - 10/18 = 0.44444.
    units = [[0, 0], [1, 1], [0, 1]]
    assert coincidences(units, 2).sum(axis=0).reshape(2, 2).tolist() == [[2, 1], [1, 2]]
    assert krippendorff_alpha(units, 2) == pytest.approx(1 - 10 / 18)


def test_alpha_with_missing_values_and_three_raters():
    # Unit [0,0,1] (three raters): ordered pairs 0-0 x2, 0-1 x2, 1-0 x2, each divided by m_u - 1 = 2 -> o_00 += 1,
    # o_01 += 1, o_10 += 1. Unit [1,1]: o_11 += 2. Units with one value or none are not pairable and add nothing.
    # o = [[1, 1], [1, 2]]; n_0 = 2, n_1 = 3, n = 5; alpha = 1 - 4 * 2 / (2 * 2 * 3) = 1 - 8/12 = 1/3.
    units = [[0, 0, 1], [1, 1], [0], []]
    assert coincidences(units, 2).sum(axis=0).reshape(2, 2).tolist() == [[1, 1], [1, 2]]
    assert krippendorff_alpha(units, 2) == pytest.approx(1 / 3)


def test_ordinal_and_interval_alpha_by_hand():
    # Three categories, units [0,1], [1,2], [2,2]: o_01 = o_10 = 1, o_12 = o_21 = 1, o_22 = 2.
    # n_0 = 1, n_1 = 2, n_2 = 3, n = 6.
    # Ordinal delta^2_ck = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2:
    #   d01 = (3 - 1.5)^2 = 2.25, d12 = (5 - 2.5)^2 = 6.25, d02 = (6 - 2)^2 = 16.
    #   observed = 2 * 2.25 + 2 * 6.25 = 17; expected = 2 * (1*2*2.25 + 2*3*6.25 + 1*3*16) = 180;
    #   alpha = 1 - 5 * 17 / 180 = 0.52778.
    # Interval delta^2 = (c - k)^2: observed = 2 * 1 + 2 * 1 = 4; expected = 2 * (1*2*1 + 2*3*1 + 1*3*4) = 40;
    #   alpha = 1 - 5 * 4 / 40 = 0.5.
    units = [[0, 1], [1, 2], [2, 2]]
    assert krippendorff_alpha(units, 3, "ordinal") == pytest.approx(1 - 85 / 180)
    assert krippendorff_alpha(units, 3, "interval") == pytest.approx(0.5)


def test_krippendorff_2011_worked_example():
    # Krippendorff (2011), section C: 4 observers, 12 units, values 1-5 (codes 0-4), missing values left out.
    # Published: nominal 0.743, ordinal 0.815, interval 0.849.
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[c[u] - 1 for c in coders if c[u] is not None] for u in range(12)]
    assert krippendorff_alpha(units, 5, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, 5, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, 5, "interval") == pytest.approx(0.849, abs=5e-4)


def test_alpha_edge_cases():
    assert krippendorff_alpha([[0, 0], [1, 1], [1, 1]], 2) == pytest.approx(1.0)  # perfect agreement
    assert math.isnan(krippendorff_alpha([[1, 1], [1, 1, 1]], 2))  # one category: no expected disagreement
    assert math.isnan(krippendorff_alpha([[1], [0]], 2))  # nothing pairable
    out = estimates(alpha_statistics([[1, 1], [1, 1]], 2), ("nominal",), confidence=0.95, n_resamples=200, seed=0)
    assert out["nominal"].estimate is None and out["nominal"].undefined_reason == ONE_CATEGORY
    empty = estimates(None, ("nominal",), confidence=0.95, n_resamples=200, seed=0)
    assert empty["nominal"].undefined_reason == NO_PAIRS and empty["nominal"].n == 0


def test_bootstrap_intervals_are_seeded_and_hold_the_estimate():
    a, b = _pairs({(1, 1): 20, (1, 0): 5, (0, 1): 10, (0, 0): 15})
    stats = kappa_statistics(a, b, 2)
    first = estimates(stats, ("agreement", "kappa"), confidence=0.9, n_resamples=500, seed=4)
    again = estimates(stats, ("agreement", "kappa"), confidence=0.9, n_resamples=500, seed=4)
    other = estimates(stats, ("agreement", "kappa"), confidence=0.9, n_resamples=500, seed=5)
    assert first == again and first != other
    kappa = first["kappa"]
    assert kappa.estimate == pytest.approx(0.4) and kappa.low < 0.4 < kappa.high
    assert (
        kappa.confidence == 0.9 and kappa.n == 50 and kappa.n_resamples == 500 and kappa.method in ("bca", "percentile")
    )
    # Resampled items keep kappa within its range.
    assert kappa.low >= -1 and kappa.high <= 1


def test_codes_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"0\.\.1"):
        cohen_kappa([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="same items"):
        kappa_statistics([0, 1], [0], 2)
