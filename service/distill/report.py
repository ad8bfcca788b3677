"""What a team decides on after a distillation: how often the student agrees with the teacher (with intervals, next
to the student's own base), and what 1,000 requests cost and how long they take for student and teacher.

Read from the recipe's evaluation: its references on the held-out prompts are the teacher's answers, so each grader's
score of a candidate is that candidate's agreement with the teacher. Hosted models are priced from their measured
token usage and the price table; a model run on this machine costs its time at ``usd_per_hour`` (mean request latency
x 1,000, an upper bound since requests share batches), or is counted as free hardware with a note saying so.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any

from api_schemas.distill import Agreement, DistillationReport, PerThousand
from service.pricing import round_money
from service.pricing.table import load_price_table

THOUSAND = Decimal(1000)
# The metric that reads as agreement, by preference; graders without one report their first metric.
AGREEMENT_METRICS = ("pass_rate", "mean", "score")


def _metric(metrics: Mapping[str, Any]) -> str | None:
    return next((m for m in AGREEMENT_METRICS if m in metrics), next(iter(metrics), None))


def agreement(results: Mapping[str, Any]) -> dict[str, dict[str, Agreement]]:
    out: dict[str, dict[str, Agreement]] = {}
    for candidate in results.get("candidates") or []:
        by_grader: dict[str, Agreement] = {}
        for name, summary in (candidate.get("graders") or {}).items():
            metric = _metric(summary.get("metrics") or {})
            if metric is None:
                continue
            ci = summary["metrics"][metric]
            by_grader[name] = Agreement(
                estimate=ci["estimate"],
                low=ci["low"],
                high=ci["high"],
                confidence=ci["confidence"],
                n=ci["n"],
                metric=metric,
            )
        out[candidate["candidate"]] = by_grader
    return out


def differences(results: Mapping[str, Any], candidate: str, baseline: str) -> dict[str, dict[str, Any]]:
    """grader -> the paired difference candidate - baseline of its agreement metric, from the evaluation."""
    for comparison in results.get("comparisons") or []:
        if comparison.get("candidate") == candidate and comparison.get("baseline") == baseline:
            out = {}
            for name, grader in (comparison.get("graders") or {}).items():
                metrics = grader.get("metrics") or {}
                metric = _metric(metrics)
                if metric is not None:
                    out[name] = {"metric": metric, **metrics[metric]}
            return out
    return {}


def per_thousand(
    result: Mapping[str, Any], *, local: bool, mean_latency_s: float | None, usd_per_hour: str | None
) -> PerThousand:
    n = int(result.get("n") or 0)
    scale = THOUSAND / n if n else Decimal(0)
    out = PerThousand(
        model=result.get("model"),
        latency_p50_s=result.get("latency_p50_s"),
        latency_p95_s=result.get("latency_p95_s"),
        input_tokens=int(Decimal(int(result.get("input_tokens") or 0)) * scale),
        output_tokens=int(Decimal(int(result.get("output_tokens") or 0)) * scale),
    )
    if local:
        if usd_per_hour is None:
            out.cost_usd, out.cost_note = "0", "run on this machine: its hardware is counted as free"
        elif mean_latency_s is not None:
            hours = Decimal(str(mean_latency_s)) * THOUSAND / Decimal(3600)
            out.cost_usd = str(round_money(hours * Decimal(usd_per_hour)))
            out.cost_note = (
                f"run on this machine at {usd_per_hour} USD/hour for 1,000 x the mean request latency (an upper "
                "bound: requests share batches)"
            )
        else:
            out.cost_note = "run on this machine, but no request was timed: no cost"
        return out
    cost = result.get("cost_usd")
    if cost is None or not n:
        out.cost_note = "no price for this model in the price table"
        return out
    out.cost_usd = str(round_money(Decimal(cost) * scale))
    out.price_table_version = load_price_table().version
    return out


def build_report(
    results: Mapping[str, Any],
    *,
    local: Collection[str],
    mean_latency_s: Mapping[str, float | None],
    usd_per_hour: str | None,
    student: str = "student",
    base: str = "base",
) -> DistillationReport:
    """``local``: names of the candidates that ran on this machine; ``mean_latency_s``: per candidate."""
    return DistillationReport(
        agreement=agreement(results),
        student_minus_base=differences(results, student, base),
        per_1000_requests={
            c["candidate"]: per_thousand(
                c,
                local=c["candidate"] in local,
                mean_latency_s=mean_latency_s.get(c["candidate"]),
                usd_per_hour=usd_per_hour,
            )
            for c in results.get("candidates") or []
        },
    )
