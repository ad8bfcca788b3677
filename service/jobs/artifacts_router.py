"""Downloads of what a job produced (e.g. a local job's LoRA adapter), and exports of a local fine-tune built on
request: POST starts one outside the request (202 while it builds), GET follows it, and a ready export is one more
artifact to download."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from api_schemas.artifacts import ArtifactKind, ArtifactOut, ExportCreate, ExportFormat, ExportOut, ExportState
from api_schemas.common import Page, problem_responses
from api_schemas.jobs import JobStatus
from api_schemas.work import LastError
from service.api.deps import CallerDep, SessionDep, SettingsDep
from service.catalog import fine_tune_name
from service.errors import Conflict, NotFound
from service.jobs import service
from service.jobs.models import Job
from service.providers.local.artifacts import Artifact, archive_filename
from service.providers.local.errors import LocalTrainingError
from service.providers.local.exports import (
    ExportStatus,
    ExportTarget,
    export_commands,
    export_status,
    ollama_name,
    start_export,
)
from service.settings import Settings

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _artifacts(settings: Settings, job: Job) -> list[Artifact]:
    # Only the local provider keeps outputs here; a remote provider's model stays with that provider.
    from service.providers.local_provider import LocalProvider, run_artifacts

    if job.provider != LocalProvider.name or not job.provider_job_id:
        return []
    return run_artifacts(settings, job.provider_job_id)


def _out(job: Job, artifact: Artifact) -> ArtifactOut:
    return ArtifactOut(
        name=artifact.name,
        kind=ArtifactKind(artifact.kind),
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        content_type=artifact.content_type,
        filename=artifact.filename(job.id),
        download_url=f"/v1/jobs/{job.id}/artifacts/{artifact.name}",
        created_at=artifact.created_at,
    )


@router.get(
    "/{job_id}/artifacts",
    response_model=Page[ArtifactOut],
    responses=problem_responses(401, 404),
    summary="List what a job produced (adapter, merged model, checkpoints), newest first",
)
def list_artifacts(job_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep) -> Page[ArtifactOut]:
    job = service.get_job(session, caller.project_id, job_id)
    return Page(data=[_out(job, a) for a in _artifacts(settings, job)], has_more=False)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}},
        **problem_responses(401, 404),
    },
    summary="Download an artifact (a folder comes as a tar archive, streamed)",
)
def download_artifact(
    job_id: str, name: str, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> StreamingResponse:
    job = service.get_job(session, caller.project_id, job_id)
    artifact = next((a for a in _artifacts(settings, job) if a.name == name), None)
    if artifact is None:
        raise NotFound("artifact", name)
    filename = artifact.filename(job.id)
    return StreamingResponse(
        artifact.iter_bytes(),
        media_type=artifact.content_type,
        headers={
            "Content-Length": str(artifact.size_bytes),
            "Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
            "ETag": f'"{artifact.sha256}"',
        },
    )


def _export_target(session: Session, settings: Settings, job: Job) -> ExportTarget:
    from service.providers.local_provider import LocalProvider, output_dir, run_artifacts

    if job.provider != LocalProvider.name or not job.provider_job_id:
        raise Conflict(
            f"job {job.id!r} ran on provider {job.provider!r}: exports exist for local fine-tunes only "
            "(a hosted provider's model stays with that provider)",
            code="export_unavailable",
        )
    if job.status != JobStatus.succeeded:
        raise Conflict(
            f"job {job.id!r} is {job.status.value}: exports exist once it has succeeded", code="export_unavailable"
        )
    # The same conversion cache the trainer and the inference runtime use for GGUF bases.
    run_id = job.provider_job_id
    return ExportTarget(
        output_dir=output_dir(settings, run_id),
        model_name=fine_tune_name(session, job),
        cache_dir=settings.data_dir / "cache",
        on_ready=lambda: run_artifacts(settings, run_id),  # checksums the new archive once, in the builder
    )


def _export_out(settings: Settings, job: Job, target: ExportTarget, status: ExportStatus) -> ExportOut:
    fmt = ExportFormat(status.format)
    artifact = None
    commands: list[str] = []
    if status.state == "ready":
        artifact = next((a for a in _artifacts(settings, job) if a.name == fmt.value), None)
        commands = export_commands(
            target.output_dir, fmt.value, model_name=target.model_name, archive=archive_filename(job.id, fmt.value)
        )
    return ExportOut(
        job_id=job.id,
        format=fmt,
        status=ExportState(status.state),
        model_name=ollama_name(target.model_name) if fmt == ExportFormat.ollama else target.model_name,
        artifact=_out(job, artifact) if artifact is not None else None,
        commands=commands,
        last_error=LastError(message=status.error, at=status.failed_at) if status.error else None,
    )


@router.post(
    "/{job_id}/exports",
    status_code=202,
    response_model=ExportOut,
    responses={200: {"model": ExportOut, "description": "The export is ready"}, **problem_responses(401, 404, 409, 422)},
    summary="Build an export of a local fine-tune (vLLM/SGLang adapter, Ollama bundle, merged model, GGUF)",
    description="Starts the build outside the request and answers 202 with status `building`; poll "
    "`GET /v1/jobs/{job_id}/exports/{format}` until it is `ready`, then download its `artifact`. Asking again for an "
    "export that is ready answers 200 with it; one that failed is built again. Builds are cached beside the run. "
    "409 `export_unavailable` when the job has no adapter (not a succeeded local job) or the format does not apply "
    "(GGUF needs a GGUF base).",
)
def create_export(
    job_id: str, body: ExportCreate, response: Response, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> ExportOut:
    job = service.get_job(session, caller.project_id, job_id)
    target = _export_target(session, settings, job)
    try:
        status = start_export(target, body.format.value, archive=archive_filename(job.id, body.format.value))
    except LocalTrainingError as exc:  # no adapter, or no such export for this base: nothing was started
        raise Conflict(str(exc), code="export_unavailable") from exc
    if status.state == "ready":
        response.status_code = 200
    return _export_out(settings, job, target, status)


@router.get(
    "/{job_id}/exports",
    response_model=Page[ExportOut],
    responses=problem_responses(401, 404, 409),
    summary="Every export format of a local fine-tune and where each stands",
)
def list_exports(job_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep) -> Page[ExportOut]:
    job = service.get_job(session, caller.project_id, job_id)
    try:
        target = _export_target(session, settings, job)
    except Conflict:
        # A job with nothing to export (hosted, or not succeeded yet) lists none, like a job with no artifacts.
        return Page(data=[], has_more=False)
    data = [_export_out(settings, job, target, export_status(target.output_dir, f.value)) for f in ExportFormat]
    return Page(data=data, has_more=False)


@router.get(
    "/{job_id}/exports/{export_format}",
    response_model=ExportOut,
    responses=problem_responses(401, 404, 409, 422),
    summary="One export of a local fine-tune: building, ready (with its download), or failed",
)
def get_export(
    job_id: str, export_format: ExportFormat, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> ExportOut:
    job = service.get_job(session, caller.project_id, job_id)
    target = _export_target(session, settings, job)
    return _export_out(settings, job, target, export_status(target.output_dir, export_format.value))
