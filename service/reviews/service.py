"""Human review queues: create one from an evaluation, serve reviewers their next items, take ratings (keeping every
revision), summarise, export.

The service API the router and the web UI share: ``create_queue``, ``get_queue``, ``progress``, ``list_items``,
``next_items``, ``get_item``, ``submit_rating``, ``queue_summary``, ``export_jsonl``, ``summaries_for_evaluation``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from sqlmodel import Session, col, func, select

from api_schemas.evaluations import EvaluationStatus
from api_schemas.reviews import (
    ReviewItemOut,
    ReviewQueueCreate,
    ReviewQueueProgress,
    ReviewQueueStatus,
    ReviewRatingCreate,
    ReviewSummary,
)
from service.clock import utcnow
from service.errors import Conflict, InvalidInput, NotFound
from service.evaluations.models import Evaluation, EvaluationSample
from service.reviews import states, summary
from service.reviews.models import ReviewItem, ReviewQueue, ReviewRating, ReviewRatingRevision
from service.reviews.sampling import Unit, draw
from service.reviews.views import item_out, queue_out, rating_out
from service.tenancy import get_owned
from service.work.machine import transition

# The evaluation's answers are final once it has stopped (a cancelled one keeps what it made).
REVIEWABLE = {EvaluationStatus.succeeded, EvaluationStatus.cancelled, EvaluationStatus.failed}
# What a rating must carry in each mode; the others must be absent.
RATING_FIELD = {"pass_fail": "passed", "score": "score", "pairwise": "preference"}
_STRATUM_MAX = 200


def _invalid(detail: str, field: str, code: str) -> InvalidInput:
    return InvalidInput(detail, code=code, errors=[{"code": code, "message": detail, "field": field}])


# ---------------------------------------------------------------------------------------------------------------------
# Creating a queue


def _candidates(evaluation: Evaluation, req: ReviewQueueCreate) -> list[str]:
    names = [c["name"] for c in evaluation.config.get("candidates") or []]
    if req.candidates is None:
        if req.mode != "pairwise":
            return names
        baseline = evaluation.config.get("baseline") or names[0]
        others = [n for n in names if n != baseline]
        if not others:
            raise _invalid(
                "pairwise review needs two candidates; this evaluation has one", "candidates", "invalid_candidates"
            )
        return [baseline, others[0]]
    for i, name in enumerate(req.candidates):
        if name not in names:
            raise _invalid(
                f"candidate {name!r} is not in this evaluation (it has {', '.join(names)})",
                f"candidates.{i}",
                "unknown_candidate",
            )
    if len(set(req.candidates)) != len(req.candidates):
        raise _invalid("candidates are named more than once", "candidates", "invalid_candidates")
    if req.mode == "pairwise" and len(req.candidates) != 2:
        raise _invalid("pairwise review compares exactly two candidates", "candidates", "invalid_candidates")
    return list(req.candidates)


def _outcome_graders(evaluation: Evaluation, samples: Sequence[EvaluationSample]) -> list[str]:
    """Graders with pass/fail outcomes on these samples, in the evaluation's order."""
    names = [g["name"] for g in evaluation.config.get("graders") or [] if g.get("type") != "llm_pairwise"]
    return [n for n in names if any(((s.scores or {}).get(n) or {}).get("passed") is not None for s in samples)]


def _outcome(sample: EvaluationSample, grader: str) -> str:
    passed = ((sample.scores or {}).get(grader) or {}).get("passed")
    return "ungraded" if passed is None else ("pass" if passed else "fail")


def _reference_label(sample: EvaluationSample) -> str:
    ref = sample.reference
    return f"reference {ref}" if isinstance(ref, str) and len(ref) <= 60 else "reference (other)"


def _units(
    mode: str, candidates: list[str], samples: Sequence[EvaluationSample], stratify: str, grader: str | None
) -> list[Unit]:
    def part(s: EvaluationSample) -> str:
        if stratify == "candidate_outcome":
            return f"{grader} {_outcome(s, grader or '')}"
        return _reference_label(s) if stratify == "reference" else ""

    if mode != "pairwise":
        units = []
        for s in samples:
            stratum = "all" if stratify == "none" else " / ".join(p for p in (s.candidate, part(s)) if p)
            units.append(Unit(s.example_key, stratum[:_STRATUM_MAX], ((s.candidate, s.id),)))
        return units
    a, b = candidates
    by_key: dict[str, dict[str, EvaluationSample]] = {}
    for s in samples:
        by_key.setdefault(s.example_key, {})[s.candidate] = s
    units = []
    for key, pair in by_key.items():
        if a not in pair or b not in pair:
            continue  # a pair needs both answers
        if stratify == "candidate_outcome":
            stratum = f"{grader}: {a} {_outcome(pair[a], grader or '')}, {b} {_outcome(pair[b], grader or '')}"
        elif stratify == "reference":
            stratum = _reference_label(pair[a])
        else:
            stratum = "all"
        units.append(Unit(key, stratum[:_STRATUM_MAX], ((a, pair[a].id), (b, pair[b].id))))
    return units


def create_queue(session: Session, project_id: str, evaluation_id: str, req: ReviewQueueCreate) -> ReviewQueue:
    evaluation = get_owned(session, Evaluation, evaluation_id, project_id, "evaluation")
    if evaluation.status not in REVIEWABLE:
        raise Conflict(
            f"evaluation {evaluation.id} is {evaluation.status}; review it once it has finished",
            code="evaluation_not_finished",
        )
    candidates = _candidates(evaluation, req)
    samples = session.exec(
        select(EvaluationSample).where(
            EvaluationSample.evaluation_id == evaluation.id,
            EvaluationSample.split == req.split,
            col(EvaluationSample.candidate).in_(candidates),
            col(EvaluationSample.ok).is_(True),
        )
    ).all()
    if not samples:
        raise _invalid(
            f"evaluation {evaluation.id} has no answered {req.split} samples of {', '.join(candidates)} to review",
            "split",
            "nothing_to_review",
        )
    with_outcomes = _outcome_graders(evaluation, samples)
    grader = req.stratify_grader
    if grader is not None and grader not in with_outcomes:
        raise _invalid(
            f"grader {grader!r} gives no pass/fail outcomes on these samples"
            + (f" (those that do: {', '.join(with_outcomes)})" if with_outcomes else ""),
            "stratify_grader",
            "invalid_stratify_grader",
        )
    stratify = req.stratify or ("candidate_outcome" if with_outcomes else "candidate")
    if stratify == "candidate_outcome":
        if not with_outcomes:
            raise _invalid(
                "no grader of this evaluation gives pass/fail outcomes; stratify by candidate, reference or none",
                "stratify",
                "invalid_stratify",
            )
        grader = grader or with_outcomes[0]
    else:
        grader = None
    units = _units(req.mode, candidates, samples, stratify, grader)
    if not units:
        raise _invalid(
            f"no example has answers from both {candidates[0]} and {candidates[1]}", "candidates", "nothing_to_review"
        )
    items, strata, available = draw(units, req.size, req.seed)
    queue = ReviewQueue(
        project_id=project_id,
        evaluation_id=evaluation.id,
        status=ReviewQueueStatus.open,
        mode=req.mode,
        config={
            **req.model_dump(mode="json"),
            "candidates": candidates,
            "stratify": stratify,
            "stratify_grader": grader,
            "strata": strata,
            "available_strata": available,
        },
        n_items=len(items),
        reviewers_per_item=req.reviewers_per_item,
    )
    session.add(queue)
    session.flush()
    session.add_all(
        ReviewItem(queue_id=queue.id, position=i.position, example_key=i.example_key, stratum=i.stratum, sides=i.sides)
        for i in items
    )
    session.flush()
    return queue


# ---------------------------------------------------------------------------------------------------------------------
# Reading


def get_queue(session: Session, project_id: str, queue_id: str) -> ReviewQueue:
    return get_owned(session, ReviewQueue, queue_id, project_id, "review_queue")


def progress(session: Session, queue: ReviewQueue) -> ReviewQueueProgress:
    complete = session.exec(
        select(func.count())
        .select_from(ReviewItem)
        .where(ReviewItem.queue_id == queue.id, ReviewItem.n_ratings >= queue.reviewers_per_item)
    ).one()
    per_reviewer = session.exec(
        select(ReviewRating.reviewer, func.count())
        .where(ReviewRating.queue_id == queue.id)
        .group_by(ReviewRating.reviewer)
        .order_by(ReviewRating.reviewer)
    ).all()
    reviewers = {name: int(n) for name, n in per_reviewer}
    return ReviewQueueProgress(
        n_items=queue.n_items,
        n_items_complete=int(complete),
        n_ratings=sum(reviewers.values()),
        reviewers=reviewers,
    )


def queue_view(session: Session, queue: ReviewQueue) -> Any:
    return queue_out(queue, progress(session, queue))


def _samples(session: Session, items: Sequence[ReviewItem]) -> dict[str, EvaluationSample]:
    ids = sorted({side["sample_id"] for item in items for side in item.sides})
    if not ids:
        return {}
    return {s.id: s for s in session.exec(select(EvaluationSample).where(col(EvaluationSample.id).in_(ids)))}


def _ratings_of(session: Session, items: Sequence[ReviewItem], reviewer: str | None) -> dict[str, Any]:
    if reviewer is None or not items:
        return {}
    ratings = session.exec(
        select(ReviewRating).where(
            col(ReviewRating.item_id).in_([i.id for i in items]), ReviewRating.reviewer == reviewer
        )
    ).all()
    return {r.item_id: rating_out(r, _history(session, r)) for r in ratings}


def _history(session: Session, rating: ReviewRating) -> list[ReviewRatingRevision]:
    return list(
        session.exec(
            select(ReviewRatingRevision)
            .where(ReviewRatingRevision.rating_id == rating.id)
            .order_by(ReviewRatingRevision.revision)
        )
    )


def _items_out(
    session: Session, queue: ReviewQueue, items: Sequence[ReviewItem], reviewer: str | None
) -> list[ReviewItemOut]:
    samples = _samples(session, items)
    ratings = _ratings_of(session, items, reviewer)
    return [item_out(queue, item, samples, ratings.get(item.id)) for item in items]


def list_items(
    session: Session,
    project_id: str,
    queue_id: str,
    *,
    reviewer: str | None = None,
    after: int | None = None,
    limit: int = 20,
) -> tuple[list[ReviewItemOut], bool]:
    """Items in queue order (with ``reviewer``'s current rating on each), and whether more follow."""
    queue = get_queue(session, project_id, queue_id)
    stmt = select(ReviewItem).where(ReviewItem.queue_id == queue.id)
    if after is not None:
        stmt = stmt.where(ReviewItem.position > after)
    rows = list(session.exec(stmt.order_by(col(ReviewItem.position)).limit(limit + 1)))
    return _items_out(session, queue, rows[:limit], reviewer), len(rows) > limit


def next_items(
    session: Session, project_id: str, queue_id: str, reviewer: str, *, after: int | None = None, limit: int = 10
) -> tuple[list[ReviewItemOut], bool]:
    """The items ``reviewer`` has not rated that still need ratings, in queue order."""
    queue = get_queue(session, project_id, queue_id)
    rated = select(ReviewRating.item_id).where(ReviewRating.queue_id == queue.id, ReviewRating.reviewer == reviewer)
    stmt = select(ReviewItem).where(
        ReviewItem.queue_id == queue.id,
        ReviewItem.n_ratings < queue.reviewers_per_item,
        col(ReviewItem.id).not_in(rated),
    )
    if after is not None:
        stmt = stmt.where(ReviewItem.position > after)
    rows = list(session.exec(stmt.order_by(col(ReviewItem.position)).limit(limit + 1)))
    return _items_out(session, queue, rows[:limit], reviewer), len(rows) > limit


def get_item(
    session: Session, project_id: str, queue_id: str, item_id: str, reviewer: str | None = None
) -> ReviewItemOut:
    queue = get_queue(session, project_id, queue_id)
    item = _item(session, queue, item_id)
    return _items_out(session, queue, [item], reviewer)[0]


def _item(session: Session, queue: ReviewQueue, item_id: str) -> ReviewItem:
    item = session.get(ReviewItem, item_id)
    if item is None or item.queue_id != queue.id:
        raise NotFound("review_item", item_id)
    return item


# ---------------------------------------------------------------------------------------------------------------------
# Rating


def _check_rating(mode: str, req: ReviewRatingCreate) -> None:
    wanted = RATING_FIELD[mode]
    if getattr(req, wanted) is None:
        raise _invalid(f"a {mode} rating needs {wanted}", wanted, "invalid_rating")
    for other in RATING_FIELD.values():
        if other != wanted and getattr(req, other) is not None:
            raise _invalid(f"a {mode} rating takes {wanted}, not {other}", other, "invalid_rating")


def submit_rating(
    session: Session, project_id: str, queue_id: str, item_id: str, req: ReviewRatingCreate
) -> tuple[ReviewRating, ReviewQueue]:
    """Set ``req.reviewer``'s current rating of the item; an earlier one stays in the history as its revision. The
    rating that gives the last item its ratings completes the queue, and the ``review_queue.completed`` event is
    written in the same transaction."""
    queue = get_queue(session, project_id, queue_id)
    # One rating at a time per queue: the count that decides completion must see every other rating.
    session.refresh(queue, with_for_update=True)
    item = _item(session, queue, item_id)
    _check_rating(queue.mode, req)
    now = utcnow()
    rating = session.exec(
        select(ReviewRating).where(ReviewRating.item_id == item.id, ReviewRating.reviewer == req.reviewer)
    ).first()
    if rating is None:
        rating = ReviewRating(queue_id=queue.id, item_id=item.id, reviewer=req.reviewer, revision=1, created_at=now)
        item.n_ratings += 1
        session.add(item)
    else:
        rating.revision += 1
    rating.passed, rating.score, rating.preference, rating.comment = req.passed, req.score, req.preference, req.comment
    rating.updated_at = now
    session.add(rating)
    session.flush()
    session.add(
        ReviewRatingRevision(
            rating_id=rating.id,
            queue_id=queue.id,
            item_id=item.id,
            reviewer=req.reviewer,
            revision=rating.revision,
            passed=req.passed,
            score=req.score,
            preference=req.preference,
            comment=req.comment,
            created_at=now,
        )
    )
    queue.updated_at = now
    session.add(queue)
    session.flush()
    if queue.status == ReviewQueueStatus.open and _all_rated(session, queue):

        def on_enter(_old: ReviewQueueStatus) -> None:
            queue.completed_at = now

        transition(
            session,
            queue,
            ReviewQueueStatus.completed,
            states.MACHINE,
            view=lambda q: queue_view(session, q),
            on_enter=on_enter,
        )
        session.flush()
    return rating, queue


def _all_rated(session: Session, queue: ReviewQueue) -> bool:
    missing = session.exec(
        select(func.count())
        .select_from(ReviewItem)
        .where(ReviewItem.queue_id == queue.id, ReviewItem.n_ratings < queue.reviewers_per_item)
    ).one()
    return int(missing) == 0


def rating_view(session: Session, rating: ReviewRating, queue: ReviewQueue) -> Any:
    return rating_out(rating, _history(session, rating), queue_status=queue.status)


# ---------------------------------------------------------------------------------------------------------------------
# Summary and export


def _load(session: Session, queue: ReviewQueue) -> tuple[list[ReviewItem], list[ReviewRating]]:
    items = list(session.exec(select(ReviewItem).where(ReviewItem.queue_id == queue.id).order_by(ReviewItem.position)))
    ratings = list(
        session.exec(
            select(ReviewRating)
            .where(ReviewRating.queue_id == queue.id)
            .order_by(ReviewRating.reviewer, ReviewRating.id)
        )
    )
    return items, ratings


# Summaries by (queue, its updated_at, the evaluation's updated_at): every rating moves the queue's updated_at, so an
# entry is only reused for unchanged data. The bootstrap of a large queue takes seconds, and GET of the evaluation
# shows every queue's summary.
_CACHE: OrderedDict[tuple[Any, ...], ReviewSummary] = OrderedDict()
_CACHE_SIZE = 64
_cache_lock = threading.Lock()


def _summary(session: Session, queue: ReviewQueue, evaluation: Evaluation) -> ReviewSummary:
    key = (queue.id, queue.status, queue.updated_at, evaluation.updated_at)
    with _cache_lock:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    items, ratings = _load(session, queue)
    result = summary.summarize(
        queue,
        evaluation.config,
        items,
        ratings,
        _samples(session, items),
        progress(session, queue),
    )
    with _cache_lock:
        _CACHE[key] = result
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


def queue_summary(session: Session, project_id: str, queue_id: str) -> ReviewSummary:
    queue = get_queue(session, project_id, queue_id)
    evaluation = session.get(Evaluation, queue.evaluation_id)
    assert evaluation is not None  # the queue's foreign key cascades
    return _summary(session, queue, evaluation)


def summaries_for_evaluation(session: Session, evaluation: Evaluation) -> list[ReviewSummary]:
    """Every review queue of the evaluation with its figures, oldest first (joined into ``GET /v1/evaluations/{id}``)."""
    queues = session.exec(
        select(ReviewQueue).where(ReviewQueue.evaluation_id == evaluation.id).order_by(ReviewQueue.id)
    ).all()
    return [_summary(session, q, evaluation) for q in queues]


def export_jsonl(session: Session, project_id: str, queue_id: str, *, history: bool = False) -> Iterator[str]:
    """One JSON line per current rating (``history``: per submission, revisions included), unblinded: the candidate
    behind each label is named."""
    queue = get_queue(session, project_id, queue_id)
    items = {i.id: i for i in session.exec(select(ReviewItem).where(ReviewItem.queue_id == queue.id))}
    model: Any = ReviewRatingRevision if history else ReviewRating
    rows = session.exec(
        select(model).where(model.queue_id == queue.id).order_by(model.item_id, model.reviewer, model.revision)
    )
    for row in rows:
        item = items[row.item_id]
        labels = {side["label"]: side["candidate"] for side in item.sides}
        line: dict[str, Any] = {
            "queue_id": queue.id,
            "evaluation_id": queue.evaluation_id,
            "item_id": item.id,
            "position": item.position,
            "example_key": item.example_key,
            "stratum": item.stratum,
            "mode": queue.mode,
            "reviewer": row.reviewer,
            "revision": row.revision,
            "labels": labels,
        }
        if queue.mode == "pairwise":
            line["preference"] = row.preference
            line["preferred_candidate"] = labels.get(row.preference) if row.preference != "tie" else None
        else:
            line["candidate"] = item.sides[0]["candidate"]
            line["passed" if queue.mode == "pass_fail" else "score"] = (
                row.passed if queue.mode == "pass_fail" else row.score
            )
        line["comment"] = row.comment
        line["created_at"] = row.created_at.isoformat().replace("+00:00", "Z")
        if not history:
            line["updated_at"] = row.updated_at.isoformat().replace("+00:00", "Z")
        yield json.dumps(line, ensure_ascii=False) + "\n"


__all__ = [
    "create_queue",
    "export_jsonl",
    "get_item",
    "get_queue",
    "list_items",
    "next_items",
    "progress",
    "queue_summary",
    "queue_view",
    "rating_view",
    "submit_rating",
    "summaries_for_evaluation",
]
