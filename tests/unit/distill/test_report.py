"""The recipe's report from an evaluation's results: agreement with intervals, cost and latency per 1,000 requests."""

from __future__ import annotations

from decimal import Decimal

from service.distill.report import build_report, per_thousand


def _ci(estimate: float, n: int = 10) -> dict:
    return {
        "estimate": estimate,
        "low": max(0.0, estimate - 0.2),
        "high": min(1.0, estimate + 0.2),
        "confidence": 0.95,
        "method": "wilson",
        "n": n,
        "n_resamples": 0,
    }


def _candidate(name: str, estimate: float, cost: str | None, model: str = "m") -> dict:
    return {
        "candidate": name,
        "model": model,
        "n": 10,
        "n_failed": 0,
        "graders": {"exact": {"metrics": {"pass_rate": _ci(estimate)}}, "chrf": {"metrics": {"mean": _ci(0.5)}}},
        "input_tokens": 500,
        "output_tokens": 30,
        "cost_usd": cost,
        "latency_p50_s": 0.2,
        "latency_p95_s": 0.4,
    }


RESULTS = {
    "candidates": [
        _candidate("base", 0.1, "0"),
        _candidate("student", 0.7, "0"),
        _candidate("teacher", 1.0, "0.000123", model="gpt-4o-mini-2024-07-18"),
    ],
    "comparisons": [
        {
            "baseline": "base",
            "candidate": "student",
            "graders": {"exact": {"metrics": {"pass_rate": {"difference": 0.6}}}},
        },
        {"baseline": "base", "candidate": "teacher", "graders": {}},
    ],
}


def test_agreement_uses_pass_rate_else_the_mean_with_its_interval():
    report = build_report(RESULTS, local={"student", "base"}, mean_latency_s={}, usd_per_hour=None)
    assert report.agreement["student"]["exact"].estimate == 0.7
    assert report.agreement["student"]["exact"].metric == "pass_rate"
    assert report.agreement["student"]["chrf"].metric == "mean"
    assert report.agreement["teacher"]["exact"].low == 0.8
    assert report.student_minus_base["exact"]["difference"] == 0.6


def test_hosted_cost_scales_to_a_thousand_requests_with_the_table_version():
    report = build_report(RESULTS, local={"student", "base"}, mean_latency_s={}, usd_per_hour=None)
    teacher = report.per_1000_requests["teacher"]
    assert teacher.cost_usd is not None and Decimal(teacher.cost_usd) == Decimal("0.0123")
    assert teacher.price_table_version and teacher.input_tokens == 50_000 and teacher.output_tokens == 3_000
    assert teacher.latency_p50_s == 0.2


def test_local_models_are_free_hardware_unless_priced_by_the_hour():
    free = per_thousand(RESULTS["candidates"][1], local=True, mean_latency_s=0.36, usd_per_hour=None)
    assert free.cost_usd == "0" and "free" in (free.cost_note or "")
    priced = per_thousand(RESULTS["candidates"][1], local=True, mean_latency_s=0.36, usd_per_hour="2.50")
    # 1,000 x 0.36 s = 0.1 h at 2.50 USD/h.
    assert priced.cost_usd is not None and float(priced.cost_usd) == 0.25
    assert "2.50 USD/hour" in (priced.cost_note or "")
    untimed = per_thousand(RESULTS["candidates"][1], local=True, mean_latency_s=None, usd_per_hour="2.50")
    assert untimed.cost_usd is None and "no request was timed" in (untimed.cost_note or "")


def test_an_unpriced_hosted_model_says_so():
    unpriced = per_thousand(_candidate("teacher", 1.0, None), local=False, mean_latency_s=None, usd_per_hour=None)
    assert unpriced.cost_usd is None and "price table" in (unpriced.cost_note or "")
