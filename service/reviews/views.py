"""Rows to API objects. Items show neutral labels only: the candidate behind a label never appears here."""

from __future__ import annotations

from collections.abc import Sequence

from api_schemas.reviews import (
    ReviewItemOut,
    ReviewQueueOut,
    ReviewQueueProgress,
    ReviewRatingOut,
    ReviewRatingRevisionOut,
    ReviewResponse,
)
from service.evaluations.models import EvaluationSample
from service.reviews.models import ReviewItem, ReviewQueue, ReviewRating, ReviewRatingRevision


def queue_out(queue: ReviewQueue, progress: ReviewQueueProgress) -> ReviewQueueOut:
    config = queue.config
    return ReviewQueueOut(
        id=queue.id,
        project_id=queue.project_id,
        evaluation_id=queue.evaluation_id,
        status=queue.status,
        mode=queue.mode,
        size=config["size"],
        seed=config["seed"],
        candidates=config["candidates"],
        split=config["split"],
        stratify=config["stratify"],
        stratify_grader=config.get("stratify_grader"),
        strata=config.get("strata") or {},
        available_strata=config.get("available_strata") or {},
        reviewers_per_item=queue.reviewers_per_item,
        score_pass_threshold=config["score_pass_threshold"],
        show_reference=config.get("show_reference", True),
        instructions=config.get("instructions"),
        progress=progress,
        created_at=queue.created_at,
        updated_at=queue.updated_at,
        completed_at=queue.completed_at,
    )


def rating_out(
    rating: ReviewRating, history: Sequence[ReviewRatingRevision] = (), queue_status: str | None = None
) -> ReviewRatingOut:
    return ReviewRatingOut(
        id=rating.id,
        queue_id=rating.queue_id,
        item_id=rating.item_id,
        reviewer=rating.reviewer,
        passed=rating.passed,
        score=rating.score,
        preference=rating.preference,  # type: ignore[arg-type]
        comment=rating.comment,
        revision=rating.revision,
        created_at=rating.created_at,
        updated_at=rating.updated_at,
        history=[
            ReviewRatingRevisionOut(
                revision=r.revision,
                passed=r.passed,
                score=r.score,
                preference=r.preference,  # type: ignore[arg-type]
                comment=r.comment,
                created_at=r.created_at,
            )
            for r in history
        ],
        queue_status=queue_status,  # type: ignore[arg-type]
    )


def item_out(
    queue: ReviewQueue,
    item: ReviewItem,
    samples: dict[str, EvaluationSample],
    rating: ReviewRatingOut | None = None,
) -> ReviewItemOut:
    shown = [samples[side["sample_id"]] for side in item.sides if side["sample_id"] in samples]
    first = shown[0] if shown else None
    return ReviewItemOut(
        id=item.id,
        queue_id=item.queue_id,
        position=item.position,
        mode=queue.mode,  # type: ignore[arg-type]
        input=first.input if first is not None else [],
        reference=first.reference if first is not None and queue.config.get("show_reference", True) else None,
        responses=[
            ReviewResponse(label=side["label"], output=_output(samples.get(side["sample_id"]))) for side in item.sides
        ],
        n_ratings=item.n_ratings,
        ratings_needed=max(0, queue.reviewers_per_item - item.n_ratings),
        rating=rating,
    )


def _output(sample: EvaluationSample | None) -> str:
    # A failed generation shows as an empty answer, as the graders saw it.
    return sample.output if sample is not None and sample.ok and sample.output is not None else ""
