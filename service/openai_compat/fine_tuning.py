"""``/v1/fine_tuning/jobs`` as OpenAI's SDK calls it: a translation onto our jobs (same rows, same worker steps)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlmodel import Session, select

from api_schemas.datasets import DatasetStatus
from api_schemas.jobs import JobCreate, JobMethod, MethodType
from api_schemas.openai_compat import (
    OpenAIErrorResponse,
    OpenAIFineTuningJob,
    OpenAIFineTuningJobCheckpointList,
    OpenAIFineTuningJobCreate,
    OpenAIFineTuningJobEventList,
    OpenAIFineTuningJobList,
)
from service.api.creating import respond_created
from service.api.deps import CallerDep, IdempotencyKey, SessionDep, SettingsDep
from service.catalog import fine_tune_name, provider_for_model
from service.datasets import service as datasets
from service.datasets.views import first_problems
from service.errors import InvalidInput, NotFound
from service.idempotency.service import fingerprint
from service.jobs import service as jobs
from service.jobs.lifecycle import JOBS
from service.jobs.models import Job, JobCheckpoint, JobEvent
from service.openai_compat.shapes import checkpoint_out, event_out, job_out
from service.providers import registry
from service.settings import Settings
from service.work.wake import wake

router = APIRouter(prefix="/fine_tuning/jobs", tags=["openai-compatible"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorResponse, "description": "OpenAI's error shape."} for code in (400, 401, 404, 409)
}


def _file(session: Session, project_id: str, file_id: str, param: str) -> None:
    """OpenAI reports a bad file on the job request as a 400 naming the parameter; so do we, with the first problems
    of its validation report (line and field) so the fix is in the message. A file still being validated is
    accepted, as OpenAI accepts it: the job checks it before it starts (``validating_files``)."""
    try:
        ds = datasets.get_dataset(session, project_id, file_id)
    except NotFound:
        raise InvalidInput(f"invalid {param}: no file {file_id!r}", code="invalid_file", param=param) from None
    if ds.status == DatasetStatus.invalid:
        raise InvalidInput(
            f"{param} {file_id} did not pass validation: {first_problems(ds.report)}",
            code="invalid_file",
            param=param,
        )


def _translate(session: Session, project_id: str, body: OpenAIFineTuningJobCreate, settings: Settings) -> JobCreate:
    if body.integrations:
        raise InvalidInput("integrations are not supported here", code="unsupported_parameter", param="integrations")
    method_type = body.method.type if body.method is not None else "supervised"
    if method_type == "reinforcement":
        raise InvalidInput(
            "reinforcement fine-tuning is not supported; use supervised or dpo",
            code="unsupported_method",
            param="method.type",
        )
    if body.method is not None and body.hyperparameters is not None:
        raise InvalidInput(
            "give hyperparameters in method (the top-level field is deprecated), not both",
            code="invalid_request",
            param="hyperparameters",
        )
    section = getattr(body.method, method_type, None) if body.method is not None else None
    given = section.hyperparameters if section is not None else body.hyperparameters
    hyperparameters = given.model_dump(exclude_none=True) if given is not None else {}
    provider = body.provider or provider_for_model(session, project_id, body.model, settings)
    native = registry.entry(provider).hyperparameters.from_openai(hyperparameters)
    return JobCreate(
        training_dataset_id=body.training_file,
        validation_dataset_id=body.validation_file,
        provider=provider,
        model=body.model,
        method=JobMethod(type=MethodType(method_type), hyperparameters=native),
        suffix=body.suffix,
        seed=body.seed,
        metadata=body.metadata or {},
    )


@router.post("", response_model=OpenAIFineTuningJob, responses=ERRORS, summary="Create a fine-tuning job")
def create_job(
    body: OpenAIFineTuningJobCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    _file(session, caller.project_id, body.training_file, "training_file")
    if body.validation_file:
        _file(session, caller.project_id, body.validation_file, "validation_file")
    request = _translate(session, caller.project_id, body, settings)

    def create() -> tuple[int, dict[str, Any]]:
        job = jobs.create_job(session, caller.project_id, request, settings, files_may_be_validating=True)
        return 200, job_out(job).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/fine_tuning/jobs",
        request_fingerprint=fingerprint(body.model_dump(mode="json")),
        create=create,
        after_commit=lambda job: wake(JOBS, job["id"]),
    )


def _metadata_filter(request: Request) -> dict[str, str]:
    """OpenAI's ``metadata[key]=value`` query parameters (the SDK's ``metadata={...}``)."""
    out = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata[") and key.endswith("]"):
            out[key[len("metadata[") : -1]] = value
    return out


@router.get("", response_model=OpenAIFineTuningJobList, responses=ERRORS, summary="List fine-tuning jobs")
def list_jobs(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    after: str | None = Query(None, max_length=100),
    limit: int = Query(20, ge=1, le=100),
) -> OpenAIFineTuningJobList:
    stmt = select(Job).where(Job.project_id == caller.project_id)
    for key, value in _metadata_filter(request).items():
        stmt = stmt.where(Job.metadata_[key].as_string() == value)
    if after:
        stmt = stmt.where(Job.id < after)
    rows = list(session.exec(stmt.order_by(Job.id.desc()).limit(limit + 1)))
    return OpenAIFineTuningJobList(data=[job_out(j) for j in rows[:limit]], has_more=len(rows) > limit)


@router.get("/{job_id}", response_model=OpenAIFineTuningJob, responses=ERRORS, summary="Retrieve a fine-tuning job")
def retrieve_job(job_id: str, caller: CallerDep, session: SessionDep) -> OpenAIFineTuningJob:
    return job_out(jobs.get_job(session, caller.project_id, job_id))


def _act(job_id: str, caller: CallerDep, session: SessionDep, action: str) -> OpenAIFineTuningJob:
    job = jobs.request_action(session, caller.project_id, job_id, action)
    session.commit()
    wake(JOBS, job.id)
    return job_out(job)


@router.post("/{job_id}/cancel", response_model=OpenAIFineTuningJob, responses=ERRORS, summary="Cancel a job")
def cancel_job(job_id: str, caller: CallerDep, session: SessionDep) -> OpenAIFineTuningJob:
    return _act(job_id, caller, session, "cancel")


@router.post("/{job_id}/pause", response_model=OpenAIFineTuningJob, responses=ERRORS, summary="Pause a job")
def pause_job(job_id: str, caller: CallerDep, session: SessionDep) -> OpenAIFineTuningJob:
    return _act(job_id, caller, session, "pause")


@router.post("/{job_id}/resume", response_model=OpenAIFineTuningJob, responses=ERRORS, summary="Resume a job")
def resume_job(job_id: str, caller: CallerDep, session: SessionDep) -> OpenAIFineTuningJob:
    return _act(job_id, caller, session, "resume")


@router.get(
    "/{job_id}/events", response_model=OpenAIFineTuningJobEventList, responses=ERRORS, summary="List a job's events"
)
def list_events(
    job_id: str,
    caller: CallerDep,
    session: SessionDep,
    after: str | None = Query(None, max_length=100),
    limit: int = Query(20, ge=1, le=100),
) -> OpenAIFineTuningJobEventList:
    job = jobs.get_job(session, caller.project_id, job_id)
    stmt = select(JobEvent).where(JobEvent.job_id == job.id)
    if after:
        stmt = stmt.where(JobEvent.id < after)
    rows = list(session.exec(stmt.order_by(JobEvent.id.desc()).limit(limit + 1)))
    return OpenAIFineTuningJobEventList(data=[event_out(e) for e in rows[:limit]], has_more=len(rows) > limit)


@router.get(
    "/{job_id}/checkpoints",
    response_model=OpenAIFineTuningJobCheckpointList,
    responses=ERRORS,
    summary="List a job's checkpoints",
)
def list_checkpoints(
    job_id: str,
    caller: CallerDep,
    session: SessionDep,
    after: str | None = Query(None, max_length=100),
    limit: int = Query(10, ge=1, le=100),
) -> OpenAIFineTuningJobCheckpointList:
    job = jobs.get_job(session, caller.project_id, job_id)
    model_name = fine_tune_name(session, job)
    stmt = select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)
    if after:
        stmt = stmt.where(JobCheckpoint.id < after)
    rows = list(session.exec(stmt.order_by(JobCheckpoint.id.desc()).limit(limit + 1)))
    data = [checkpoint_out(job, c, model_name) for c in rows[:limit]]
    return OpenAIFineTuningJobCheckpointList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=len(rows) > limit,
    )
