"""A review queue's figures: what the humans said per candidate, how far they agree with each other, and how far each
of the evaluation's graders agrees with their majority (which judge to trust on this task).

Items are the bootstrap's units throughout (ratings of one item are not independent); the seed is the queue's.
Codes for the agreement statistics: pass/fail 0 = fail, 1 = pass; scores 1-5 are 0-4; pairwise preferences are
unblinded first, 0 = the first candidate, 1 = tie, 2 = the second (labels A/B are drawn per item, so only the
candidate behind a label means the same thing across items).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from api_schemas.graders import ConfidenceInterval
from api_schemas.reviews import (
    AgreementEstimate,
    CandidateReview,
    GraderAgreement,
    InterReviewerAgreement,
    PairwiseReview,
    ReviewerPairAgreement,
    ReviewQueueProgress,
    ReviewSummary,
)
from service.evaluations.models import EvaluationSample
from service.evaluations.stats import SufficientStatistics, bootstrap_ci, bootstrap_mean_ci
from service.reviews import agreement
from service.reviews.agreement import NO_PAIRS, AlphaMetric
from service.reviews.models import ReviewItem, ReviewQueue, ReviewRating

N_RESAMPLES = 2000
# Cohen's kappa for every two reviewers is quadratic in their number; beyond this many pairs only the pairs sharing
# the most items are shown (alpha covers everyone).
MAX_REVIEWER_PAIRS = 20
K = {"pass_fail": 2, "score": 5, "pairwise": 3}


def _code(mode: str, rating: ReviewRating, item: ReviewItem, candidates: Sequence[str]) -> int | None:
    if mode == "pass_fail":
        return None if rating.passed is None else int(rating.passed)
    if mode == "score":
        return None if rating.score is None else rating.score - 1
    if rating.preference == "tie":
        return 1
    chosen = next((s["candidate"] for s in item.sides if s["label"] == rating.preference), None)
    return None if chosen is None else (0 if chosen == candidates[0] else 2)


def _estimate(e: agreement.Estimate) -> AgreementEstimate:
    return AgreementEstimate.model_validate(asdict(e))


class _Context:
    def __init__(
        self,
        queue: ReviewQueue,
        items: Sequence[ReviewItem],
        ratings: Sequence[ReviewRating],
        confidence: float,
    ) -> None:
        self.queue, self.mode = queue, queue.mode
        self.candidates: list[str] = queue.config["candidates"]
        self.confidence, self.seed = confidence, int(queue.config.get("seed", 0))
        self.items = {i.id: i for i in items}
        # Per item, reviewer -> code.
        self.codes: dict[str, dict[str, int]] = {}
        for r in ratings:
            item = self.items.get(r.item_id)
            code = None if item is None else _code(self.mode, r, item, self.candidates)
            if code is not None:
                self.codes.setdefault(r.item_id, {})[r.reviewer] = code

    def ci(self, values: Sequence[float]) -> ConfidenceInterval | None:
        if not values:
            return None
        return bootstrap_mean_ci(values, confidence=self.confidence, n_resamples=N_RESAMPLES, rng=self.seed)

    def estimates(
        self, stats: SufficientStatistics | None, names: Sequence[str], empty_reason: str = NO_PAIRS
    ) -> dict[str, AgreementEstimate]:
        out = agreement.estimates(
            stats,
            names,
            confidence=self.confidence,
            n_resamples=N_RESAMPLES,
            seed=self.seed,
            empty_reason=empty_reason,
        )
        return {name: _estimate(e) for name, e in out.items()}


def summarize(
    queue: ReviewQueue,
    evaluation_config: dict[str, Any],
    items: Sequence[ReviewItem],
    ratings: Sequence[ReviewRating],
    samples: dict[str, EvaluationSample],
    progress: ReviewQueueProgress,
) -> ReviewSummary:
    ctx = _Context(queue, items, ratings, float(evaluation_config.get("confidence", 0.95)))
    notes: list[str] = []
    graders = _graders(ctx, evaluation_config, samples, notes)
    trusted = [g for g in graders if g.kappa.low is not None]
    return ReviewSummary(
        queue_id=queue.id,
        evaluation_id=queue.evaluation_id,
        mode=queue.mode,  # type: ignore[arg-type]
        status=queue.status,  # type: ignore[arg-type]
        confidence=ctx.confidence,
        progress=progress,
        candidates=_candidates(ctx) if ctx.mode != "pairwise" else [],
        pairwise=_pairwise(ctx) if ctx.mode == "pairwise" else None,
        inter_reviewer=_inter_reviewer(ctx, notes),
        graders=graders,
        most_trusted_grader=max(trusted, key=lambda g: (g.kappa.low, g.kappa.estimate)).grader if trusted else None,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------------------------------
# What the humans said


def _candidates(ctx: _Context) -> list[CandidateReview]:
    out = []
    for candidate in ctx.candidates:
        per_item = [
            list(codes.values())
            for item_id, codes in ctx.codes.items()
            if ctx.items[item_id].sides[0]["candidate"] == candidate
        ]
        n_ratings = sum(len(c) for c in per_item)
        if ctx.mode == "pass_fail":
            out.append(
                CandidateReview(
                    candidate=candidate,
                    n_items=len(per_item),
                    n_ratings=n_ratings,
                    pass_rate=ctx.ci([float(np.mean(c)) for c in per_item]),
                )
            )
        else:
            counts = Counter(code + 1 for c in per_item for code in c)
            out.append(
                CandidateReview(
                    candidate=candidate,
                    n_items=len(per_item),
                    n_ratings=n_ratings,
                    mean_score=ctx.ci([float(np.mean(c)) + 1 for c in per_item]),
                    score_counts={str(s): counts.get(s, 0) for s in range(1, 6)},
                )
            )
    return out


def _pairwise(ctx: _Context) -> PairwiseReview:
    a, b = ctx.candidates
    rows = [[np.mean([c == code for c in codes.values()]) for code in (0, 2, 1)] for codes in ctx.codes.values()]
    result = PairwiseReview(candidate_a=a, candidate_b=b, n_items=len(rows))
    if not rows:
        return result
    stats = SufficientStatistics(
        np.column_stack([np.asarray(rows), np.ones(len(rows))]),
        {name: _share(col) for name, col in (("a_preferred", 0), ("b_preferred", 1), ("tie", 2))},
    )
    cis = bootstrap_ci(stats, confidence=ctx.confidence, n_resamples=N_RESAMPLES, method="bca", rng=ctx.seed)
    return result.model_copy(update=cis)


def _share(column: int) -> Any:
    return lambda sums: sums[:, column] / sums[:, 3]


# ---------------------------------------------------------------------------------------------------------------------
# Humans with each other


def _inter_reviewer(ctx: _Context, notes: list[str]) -> InterReviewerAgreement:
    k = K[ctx.mode]
    multi = [codes for codes in ctx.codes.values() if len(codes) >= 2]
    metrics: tuple[AlphaMetric, ...] = ("ordinal", "interval") if ctx.mode == "score" else ("nominal",)
    stats = agreement.alpha_statistics([list(c.values()) for c in multi], k, metrics) if multi else None
    alpha = ctx.estimates(stats, metrics)
    weights: agreement.KappaWeights = "quadratic" if ctx.mode == "score" else "none"
    shared: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for codes in ctx.codes.values():
        for r1, r2 in itertools.combinations(sorted(codes), 2):
            shared.setdefault((r1, r2), []).append((codes[r1], codes[r2]))
    if len(shared) > MAX_REVIEWER_PAIRS:
        notes.append(
            f"Cohen's kappa is shown for the {MAX_REVIEWER_PAIRS} reviewer pairs sharing the most items "
            f"(of {len(shared)}); Krippendorff's alpha covers every reviewer"
        )
    chosen = sorted(shared.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:MAX_REVIEWER_PAIRS]
    pairs = []
    for (r1, r2), codes in sorted(chosen):
        figures = ctx.estimates(
            agreement.kappa_statistics([c[0] for c in codes], [c[1] for c in codes], k, weights),
            ("agreement", "kappa"),
        )
        pairs.append(
            ReviewerPairAgreement(
                reviewers=[r1, r2],
                n_items=len(codes),
                agreement=figures["agreement"],
                kappa=figures["kappa"],
                weights=weights,
            )
        )
    if not multi:
        notes.append("no item has two ratings yet: inter-reviewer agreement needs reviewers_per_item of 2 or more")
    return InterReviewerAgreement(n_items=len(multi), alpha=alpha, pairs=pairs)


# ---------------------------------------------------------------------------------------------------------------------
# Graders against the humans


def _human_majority(ctx: _Context, codes: dict[str, int]) -> int | None:
    """pass_fail: 1 when most ratings pass, 0 when most fail; score: 1 when the mean score reaches the queue's
    threshold; pairwise: the most frequent preference. A tie between the humans has no majority (None)."""
    values = list(codes.values())
    if ctx.mode == "score":
        return int(np.mean(values) + 1 >= ctx.queue.config.get("score_pass_threshold", 4))
    top = Counter(values).most_common()
    if len(top) > 1 and top[0][1] == top[1][1]:
        return None
    return top[0][0]


def _grader_code(ctx: _Context, item: ReviewItem, samples: dict[str, EvaluationSample], grader: str) -> int | None:
    scores = [
        ((samples[s["sample_id"]].scores or {}).get(grader) or {}) if s["sample_id"] in samples else {}
        for s in item.sides
    ]
    if ctx.mode != "pairwise":
        passed = scores[0].get("passed")
        return None if passed is None else int(passed)
    by_candidate = {s["candidate"]: sc.get("value") for s, sc in zip(item.sides, scores, strict=True)}
    va, vb = by_candidate.get(ctx.candidates[0]), by_candidate.get(ctx.candidates[1])
    if va is None or vb is None:
        return None
    return 0 if va > vb else (2 if vb > va else 1)


def _graders(
    ctx: _Context, config: dict[str, Any], samples: dict[str, EvaluationSample], notes: list[str]
) -> list[GraderAgreement]:
    k = 3 if ctx.mode == "pairwise" else 2
    basis = (
        "the preference the grader's per-sample values imply (higher wins, equal is a tie) vs the human majority"
        if ctx.mode == "pairwise"
        else "grader passed vs human majority pass"
        + (f" (mean score >= {ctx.queue.config.get('score_pass_threshold', 4)})" if ctx.mode == "score" else "")
    )
    out = []
    for spec in config.get("graders") or []:
        name, type_ = spec.get("name"), spec.get("type", "")
        if type_ == "llm_pairwise":
            notes.append(f"grader {name}: pairwise verdicts are not stored per example, so they are not compared")
            continue
        pairs = []
        for item_id, codes in ctx.codes.items():
            human = _human_majority(ctx, codes)
            graded = _grader_code(ctx, ctx.items[item_id], samples, name)
            if human is not None and graded is not None:
                pairs.append((graded, human))
        stats = agreement.kappa_statistics([p[0] for p in pairs], [p[1] for p in pairs], k) if pairs else None
        reason = "no reviewed item has both a grader outcome and a human majority"
        figures = ctx.estimates(stats, ("agreement", "kappa"), reason)
        binary = ctx.mode != "pairwise" and pairs
        on_scale = _score_figures(ctx, samples, spec) if ctx.mode == "score" else {}
        out.append(
            GraderAgreement(
                grader=name,
                type=type_,
                llm_judge=type_.startswith("llm_"),
                basis=basis,
                n_items=len(pairs),
                agreement=figures["agreement"],
                kappa=figures["kappa"],
                grader_pass_rate=float(np.mean([p[0] for p in pairs])) if binary else None,
                human_pass_rate=float(np.mean([p[1] for p in pairs])) if binary else None,
                score_agreement=on_scale.get("agreement"),
                score_kappa=on_scale.get("kappa"),
            )
        )
    return out


def _score_figures(
    ctx: _Context, samples: dict[str, EvaluationSample], spec: dict[str, Any]
) -> dict[str, AgreementEstimate]:
    """A judge scoring 1-5 against each human score on the same scale (quadratic weights: 4 vs 5 is nearly right)."""
    if spec.get("type") != "llm_rubric" or spec.get("scale", "1-5") != "1-5":
        return {}
    per_item = []
    for item_id, codes in ctx.codes.items():
        side = ctx.items[item_id].sides[0]
        sample = samples.get(side["sample_id"])
        value = ((sample.scores or {}).get(spec["name"]) or {}).get("value") if sample is not None else None
        if value is not None and float(value).is_integer() and 1 <= value <= 5:
            per_item.append([(int(value) - 1, human) for human in codes.values()])
    stats = agreement.clustered_kappa_statistics(per_item, 5, "quadratic") if per_item else None
    return ctx.estimates(stats, ("agreement", "kappa"), "no reviewed item has a score from this grader")
