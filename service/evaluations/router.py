"""Evaluations: create, follow, read samples, cancel; and the grader catalogue."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlmodel import Session

from api_schemas.common import Page, problem_responses
from api_schemas.evaluations import EvaluationCreate, EvaluationOut, EvaluationStatus, SampleOut
from api_schemas.graders import GraderInfo
from service.api.creating import respond_created
from service.api.deps import CallerDep, IdempotencyKey, SessionDep, SettingsDep
from service.api.pagination import PageParams, page_params, paginate, select_for_project
from service.evaluations import service
from service.evaluations.graders.registry import list_graders
from service.evaluations.models import Evaluation, EvaluationSample
from service.evaluations.views import evaluation_out, sample_out
from service.idempotency.service import fingerprint
from service.reviews.service import summaries_for_evaluation
from service.work.wake import wake

router = APIRouter(tags=["evaluations"])


def _wake(session: Session, evaluation_id: str) -> None:
    row = session.get(Evaluation, evaluation_id)
    wake(service.EVALUATIONS, evaluation_id, queue=row.worker_queue if row is not None else None)


@router.post(
    "/evaluations",
    status_code=201,
    response_model=EvaluationOut,
    responses=problem_responses(401, 404, 409, 422, 503),
    summary="Evaluate candidates on a held-out dataset",
)
def create_evaluation(
    body: EvaluationCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def create() -> tuple[int, dict[str, Any]]:
        evaluation = service.create_evaluation(session, caller.project_id, body, settings=settings)
        return 201, evaluation_out(evaluation).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/evaluations",
        request_fingerprint=fingerprint(body.model_dump(mode="json")),
        create=create,
        after_commit=lambda evaluation: _wake(session, evaluation["id"]),
    )


@router.get("/evaluations", response_model=Page[EvaluationOut], responses=problem_responses(401))
def list_evaluations(
    caller: CallerDep,
    session: SessionDep,
    page: PageParams = Depends(page_params),
    status: EvaluationStatus | None = Query(None),
    job_id: str | None = Query(None, max_length=40),
) -> Page[EvaluationOut]:
    stmt = select_for_project(Evaluation, caller.project_id)
    if status is not None:
        stmt = stmt.where(Evaluation.status == status)
    if job_id is not None:
        stmt = stmt.where(Evaluation.job_id == job_id)
    return paginate(session, stmt, Evaluation, page, evaluation_out)


@router.get("/evaluations/{evaluation_id}", response_model=EvaluationOut, responses=problem_responses(401, 404))
def get_evaluation(evaluation_id: str, caller: CallerDep, session: SessionDep) -> EvaluationOut:
    evaluation = service.get_evaluation(session, caller.project_id, evaluation_id)
    return evaluation_out(evaluation).model_copy(update={"reviews": summaries_for_evaluation(session, evaluation)})


@router.get(
    "/evaluations/{evaluation_id}/samples",
    response_model=Page[SampleOut],
    responses=problem_responses(401, 404),
    summary="Per-sample inputs, outputs, scores, latency, tokens and errors",
)
def list_samples(
    evaluation_id: str,
    caller: CallerDep,
    session: SessionDep,
    page: PageParams = Depends(page_params),
    candidate: str | None = Query(None, max_length=64),
    split: Literal["test", "train"] | None = Query(None),
    only: Literal["disagreements", "failed"] | None = Query(
        None,
        description="disagreements: examples a candidate and the baseline grade differently (flipped); "
        "failed: samples whose generation failed.",
    ),
) -> Page[SampleOut]:
    evaluation = service.get_evaluation(session, caller.project_id, evaluation_id)
    stmt = service.list_samples_stmt(evaluation.id)
    if candidate is not None:
        stmt = stmt.where(EvaluationSample.candidate == candidate)
    if split is not None:
        stmt = stmt.where(EvaluationSample.split == split)
    if only == "failed":
        stmt = stmt.where(EvaluationSample.ok.is_(False))  # type: ignore[attr-defined]
    elif only == "disagreements":
        keys = service.sample_filter_keys(evaluation, candidate)
        stmt = stmt.where(EvaluationSample.example_key.in_(sorted(keys)))  # type: ignore[attr-defined]
    return paginate(session, stmt, EvaluationSample, page, sample_out)


@router.post(
    "/evaluations/{evaluation_id}/cancel",
    response_model=EvaluationOut,
    responses=problem_responses(401, 404, 409),
    summary="Stop an evaluation; answers already made stay readable and are summarised",
)
def cancel_evaluation(evaluation_id: str, caller: CallerDep, session: SessionDep) -> EvaluationOut:
    evaluation = service.request_cancel(session, caller.project_id, evaluation_id)
    session.commit()
    _wake(session, evaluation.id)
    return evaluation_out(evaluation)


@router.get("/graders", response_model=list[GraderInfo], responses=problem_responses(401), tags=["evaluations"])
def graders(_caller: CallerDep) -> list[GraderInfo]:
    """Every grader type with its description, capabilities and configuration schema."""
    return list_graders()
