"""Human review queues of an evaluation: create, follow, serve items to reviewers, take ratings, summarise, export."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api_schemas.common import Page, problem_responses
from api_schemas.reviews import (
    ReviewItemOut,
    ReviewItemPage,
    ReviewQueueCreate,
    ReviewQueueOut,
    ReviewRatingCreate,
    ReviewRatingOut,
    ReviewSummary,
)
from service.api.creating import respond_created
from service.api.deps import CallerDep, IdempotencyKey, SessionDep
from service.api.pagination import PageParams, page_params, paginate, select_for_project
from service.errors import InvalidInput
from service.idempotency.service import fingerprint
from service.reviews import service
from service.reviews.models import ReviewQueue

router = APIRouter(tags=["reviews"])

_REVIEWER = Query(
    None,
    min_length=1,
    max_length=100,
    pattern=r"^\S(.*\S)?$",
    description="The reviewer asking (the name given at sign-in): their current rating comes with each item.",
)


@router.post(
    "/evaluations/{evaluation_id}/review",
    status_code=201,
    response_model=ReviewQueueOut,
    responses=problem_responses(401, 404, 409, 422),
    summary="Start a blind human review of a stratified sample of an evaluation's answers",
)
def create_review_queue(
    evaluation_id: str,
    body: ReviewQueueCreate,
    caller: CallerDep,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def create() -> tuple[int, dict[str, Any]]:
        queue = service.create_queue(session, caller.project_id, evaluation_id, body)
        return 201, service.queue_view(session, queue).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/evaluations/{evaluation_id}/review",
        request_fingerprint=fingerprint({"evaluation_id": evaluation_id, **body.model_dump(mode="json")}),
        create=create,
    )


@router.get("/review_queues", response_model=Page[ReviewQueueOut], responses=problem_responses(401))
def list_review_queues(
    caller: CallerDep,
    session: SessionDep,
    page: PageParams = Depends(page_params),
    evaluation_id: str | None = Query(None, max_length=40),
) -> Page[ReviewQueueOut]:
    stmt = select_for_project(ReviewQueue, caller.project_id)
    if evaluation_id is not None:
        stmt = stmt.where(ReviewQueue.evaluation_id == evaluation_id)
    return paginate(session, stmt, ReviewQueue, page, lambda q: service.queue_view(session, q))


@router.get("/review_queues/{queue_id}", response_model=ReviewQueueOut, responses=problem_responses(401, 404))
def get_review_queue(queue_id: str, caller: CallerDep, session: SessionDep) -> ReviewQueueOut:
    return service.queue_view(session, service.get_queue(session, caller.project_id, queue_id))  # type: ignore[no-any-return]


@router.get(
    "/review_queues/{queue_id}/items",
    response_model=ReviewItemPage,
    responses=problem_responses(401, 404, 422),
    summary="Items in queue order, or a reviewer's next ones",
)
def list_review_items(
    queue_id: str,
    caller: CallerDep,
    session: SessionDep,
    reviewer: str | None = _REVIEWER,
    pending: bool = Query(
        False,
        description="Only the items the reviewer has not rated that still need ratings (their next items); needs "
        "reviewer.",
    ),
    limit: int = Query(10, ge=1, le=100),
    after: int | None = Query(None, ge=0, le=2**31 - 1, description="`next_cursor` of the previous page."),
) -> ReviewItemPage:
    if pending:
        if reviewer is None:
            raise InvalidInput(
                "pending=true lists a reviewer's next items: give reviewer",
                code="reviewer_required",
                errors=[{"code": "reviewer_required", "message": "required with pending=true", "field": "reviewer"}],
            )
        items, more = service.next_items(session, caller.project_id, queue_id, reviewer, after=after, limit=limit)
    else:
        items, more = service.list_items(
            session, caller.project_id, queue_id, reviewer=reviewer, after=after, limit=limit
        )
    return ReviewItemPage(data=items, has_more=more, next_cursor=str(items[-1].position) if more else None)


@router.get(
    "/review_queues/{queue_id}/items/{item_id}", response_model=ReviewItemOut, responses=problem_responses(401, 404)
)
def get_review_item(
    queue_id: str, item_id: str, caller: CallerDep, session: SessionDep, reviewer: str | None = _REVIEWER
) -> ReviewItemOut:
    return service.get_item(session, caller.project_id, queue_id, item_id, reviewer)


@router.post(
    "/review_queues/{queue_id}/items/{item_id}/ratings",
    response_model=ReviewRatingOut,
    responses=problem_responses(401, 404, 422),
    summary="Rate an item as a reviewer; a second submission replaces the current rating and keeps the first",
)
def submit_review_rating(
    queue_id: str, item_id: str, body: ReviewRatingCreate, caller: CallerDep, session: SessionDep
) -> ReviewRatingOut:
    rating, queue = service.submit_rating(session, caller.project_id, queue_id, item_id, body)
    return service.rating_view(session, rating, queue)  # type: ignore[no-any-return]


@router.get(
    "/review_queues/{queue_id}/summary",
    response_model=ReviewSummary,
    responses=problem_responses(401, 404),
    summary="Human results per candidate, agreement between reviewers, and each grader against the humans",
)
def review_summary(queue_id: str, caller: CallerDep, session: SessionDep) -> ReviewSummary:
    return service.queue_summary(session, caller.project_id, queue_id)


@router.get(
    "/review_queues/{queue_id}/export",
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "One JSON line per rating, unblinded."},
        **problem_responses(401, 404),
    },
    response_class=Response,
    summary="Ratings as JSONL with the candidate behind each label",
)
def export_reviews(
    queue_id: str,
    caller: CallerDep,
    session: SessionDep,
    history: bool = Query(False, description="Every submission (revisions included) instead of current ratings."),
) -> Response:
    # Read whole before answering: the request's session closes when the handler returns.
    lines = list(service.export_jsonl(session, caller.project_id, queue_id, history=history))
    return Response(
        "".join(lines),
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="{queue_id}.jsonl"'},
    )
