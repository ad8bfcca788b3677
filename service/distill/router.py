"""Routes: ``/v1/datasets/distill`` (a teacher's answers as a new dataset) and ``/v1/distillations`` (the recipe)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api_schemas.common import Page, problem_responses
from api_schemas.distill import (
    DistillationCreate,
    DistillationOut,
    DistillationStatus,
    DistillDatasetCreate,
    DistillRunOut,
    DistillRunStatus,
)
from service.api.creating import respond_created
from service.api.deps import CallerDep, IdempotencyKey, SessionDep, SettingsDep
from service.api.pagination import PageParams, page_params, paginate, select_for_project
from service.distill import generate, recipe
from service.distill.models import Distillation, DistillRun
from service.distill.views import run_out
from service.evaluations.service import EVALUATIONS
from service.idempotency.service import fingerprint
from service.work.wake import wake

router = APIRouter(tags=["distillation"])


def _wake_pass(body: dict[str, Any]) -> None:
    if body.get("evaluation_id") and body.get("status") == DistillRunStatus.generating:
        wake(EVALUATIONS, body["evaluation_id"])


@router.post(
    "/datasets/distill",
    status_code=201,
    response_model=DistillRunOut,
    responses=problem_responses(401, 404, 409, 422, 503),
    summary="A new chat dataset from a teacher's answers to a dataset's prompts (filtered, deduplicated)",
)
def create_distill_run(
    body: DistillDatasetCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def create() -> tuple[int, dict[str, Any]]:
        run = generate.create_run(session, caller.project_id, body, settings=settings)
        return 201, run_out(run).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/datasets/distill",
        request_fingerprint=fingerprint(body.model_dump(mode="json")),
        create=create,
        after_commit=_wake_pass,
    )


@router.get("/datasets/distill", response_model=Page[DistillRunOut], responses=problem_responses(401))
def list_distill_runs(
    caller: CallerDep,
    session: SessionDep,
    page: PageParams = Depends(page_params),
    status: DistillRunStatus | None = Query(None),
) -> Page[DistillRunOut]:
    stmt = select_for_project(DistillRun, caller.project_id)
    if status is not None:
        stmt = stmt.where(DistillRun.status == status)
    return paginate(session, stmt, DistillRun, page, run_out)


@router.get("/datasets/distill/{run_id}", response_model=DistillRunOut, responses=problem_responses(401, 404))
def get_distill_run(run_id: str, caller: CallerDep, session: SessionDep) -> DistillRunOut:
    return run_out(generate.get_run(session, caller.project_id, run_id))


@router.post(
    "/datasets/distill/{run_id}/cancel",
    response_model=DistillRunOut,
    responses=problem_responses(401, 404, 409),
    summary="Stop asking the teacher; the dataset is built from the answers already received",
)
def cancel_distill_run(run_id: str, caller: CallerDep, session: SessionDep) -> DistillRunOut:
    run = generate.request_cancel(session, caller.project_id, run_id)
    out = run_out(run)
    session.commit()
    return out


@router.post(
    "/datasets/distill/{run_id}/resume",
    response_model=DistillRunOut,
    responses=problem_responses(401, 404, 409),
    summary="Go on with a cancelled or failed distillation; answers already received are not asked again",
)
def resume_distill_run(run_id: str, caller: CallerDep, session: SessionDep) -> DistillRunOut:
    run = generate.resume(session, caller.project_id, run_id)
    out = run_out(run)
    session.commit()
    _wake_pass(out.model_dump(mode="json"))
    return out


# The recipe -------------------------------------------------------------------------------------------------------


@router.post(
    "/distillations",
    status_code=201,
    response_model=DistillationOut,
    responses=problem_responses(401, 404, 409, 422, 503),
    summary="Distil a teacher into a student: dataset, frozen split, training, evaluation against teacher and base",
)
def create_distillation(
    body: DistillationCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def create() -> tuple[int, dict[str, Any]]:
        row = recipe.create(session, caller.project_id, body, settings=settings)
        return 201, recipe.view(session, row).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/distillations",
        request_fingerprint=fingerprint(body.model_dump(mode="json")),
        create=create,
        after_commit=lambda body: _wake_pass(recipe.first_pass(session, body["steps"]["distill"]["id"])),
    )


@router.get("/distillations", response_model=Page[DistillationOut], responses=problem_responses(401))
def list_distillations(
    caller: CallerDep,
    session: SessionDep,
    page: PageParams = Depends(page_params),
    status: DistillationStatus | None = Query(None),
) -> Page[DistillationOut]:
    stmt = select_for_project(Distillation, caller.project_id)
    if status is not None:
        stmt = stmt.where(Distillation.status == status)
    return paginate(session, stmt, Distillation, page, lambda row: recipe.view(session, row))


@router.get("/distillations/{distillation_id}", response_model=DistillationOut, responses=problem_responses(401, 404))
def get_distillation(distillation_id: str, caller: CallerDep, session: SessionDep) -> DistillationOut:
    return recipe.view(session, recipe.get(session, caller.project_id, distillation_id))


@router.post(
    "/distillations/{distillation_id}/cancel",
    response_model=DistillationOut,
    responses=problem_responses(401, 404, 409),
    summary="Cancel the recipe and the step it is on (a distillation keeps the answers it has)",
)
def cancel_distillation(distillation_id: str, caller: CallerDep, session: SessionDep) -> DistillationOut:
    row = recipe.request_cancel(session, caller.project_id, distillation_id)
    out = recipe.view(session, row)
    session.commit()
    return out
