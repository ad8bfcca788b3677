from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlmodel import select

from api_schemas.common import Page, problem_responses
from api_schemas.jobs import CheckpointOut, JobCreate, JobEventOut, JobMetricsOut, JobOut, JobRerun, JobStatus
from service.api.creating import respond_created
from service.api.deps import CallerDep, IdempotencyKey, SessionDep, SettingsDep
from service.api.pagination import PageParams, page_params, paginate, select_for_project
from service.evaluations.service import check_job_evaluation_request
from service.idempotency.service import fingerprint
from service.jobs import service
from service.jobs.lifecycle import JOBS
from service.jobs.models import Job, JobCheckpoint, JobEvent
from service.jobs.views import checkpoint_out, event_out, job_out
from service.work.wake import wake

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _wake(job: dict[str, Any]) -> None:
    wake(JOBS, job["id"])


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses=problem_responses(401, 404, 409, 422),
    summary="Create a fine-tuning job",
)
def create_job(
    body: JobCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def create() -> tuple[int, dict[str, Any]]:
        evaluation_request = (
            check_job_evaluation_request(session, caller.project_id, body.evaluation, settings)
            if body.evaluation is not None
            else None
        )
        job = service.create_job(session, caller.project_id, body, settings, evaluation_request=evaluation_request)
        return 201, job_out(job).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/jobs",
        request_fingerprint=fingerprint(body.model_dump(mode="json")),
        create=create,
        after_commit=_wake,
    )


@router.get("", response_model=Page[JobOut], responses=problem_responses(401))
def list_jobs(
    caller: CallerDep,
    session: SessionDep,
    page: PageParams = Depends(page_params),
    status: JobStatus | None = Query(None),
    provider: str | None = Query(None, max_length=32),
) -> Page[JobOut]:
    stmt = select_for_project(Job, caller.project_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if provider is not None:
        stmt = stmt.where(Job.provider == provider)
    return paginate(session, stmt, Job, page, job_out)


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(401, 404))
def get_job(job_id: str, caller: CallerDep, session: SessionDep) -> JobOut:
    return job_out(service.get_job(session, caller.project_id, job_id))


@router.get("/{job_id}/events", response_model=Page[JobEventOut], responses=problem_responses(401, 404))
def list_events(
    job_id: str, caller: CallerDep, session: SessionDep, page: PageParams = Depends(page_params)
) -> Page[JobEventOut]:
    job = service.get_job(session, caller.project_id, job_id)
    return paginate(session, select(JobEvent).where(JobEvent.job_id == job.id), JobEvent, page, event_out)


@router.get("/{job_id}/checkpoints", response_model=Page[CheckpointOut], responses=problem_responses(401, 404))
def list_checkpoints(
    job_id: str, caller: CallerDep, session: SessionDep, page: PageParams = Depends(page_params)
) -> Page[CheckpointOut]:
    job = service.get_job(session, caller.project_id, job_id)
    stmt = select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)
    return paginate(session, stmt, JobCheckpoint, page, checkpoint_out)


@router.get(
    "/{job_id}/metrics",
    response_model=JobMetricsOut,
    responses=problem_responses(401, 404),
    summary="Loss and accuracy per step",
)
def get_metrics(job_id: str, caller: CallerDep, session: SessionDep) -> JobMetricsOut:
    return JobMetricsOut(**service.job_metrics(session, service.get_job(session, caller.project_id, job_id)))


@router.post(
    "/{job_id}/rerun",
    status_code=201,
    response_model=JobOut,
    responses=problem_responses(401, 404, 409, 422),
    summary="Run the same recipe on another provider or base model (linked to this job)",
)
def rerun_job(
    job_id: str,
    body: JobRerun,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def create() -> tuple[int, dict[str, Any]]:
        job = service.rerun_job(session, caller.project_id, job_id, body, settings)
        return 201, job_out(job).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route=f"POST /v1/jobs/{job_id}/rerun",
        request_fingerprint=fingerprint(body.model_dump(mode="json")),
        create=create,
        after_commit=_wake,
    )


def _action(action: str):  # type: ignore[no-untyped-def]
    def handler(job_id: str, caller: CallerDep, session: SessionDep) -> JobOut:
        job = service.request_action(session, caller.project_id, job_id, action)
        session.commit()
        wake(JOBS, job.id)
        return job_out(job)

    handler.__name__ = f"{action}_job"
    return handler


for _name in ("cancel", "pause", "resume"):
    router.add_api_route(
        f"/{{job_id}}/{_name}",
        _action(_name),
        methods=["POST"],
        response_model=JobOut,
        responses=problem_responses(401, 404, 409),
        summary=f"{_name.capitalize()} a job",
    )
