"""Downloads of what a job produced (e.g. a local job's LoRA adapter)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api_schemas.artifacts import ArtifactKind, ArtifactOut
from api_schemas.common import Page, problem_responses
from service.api.deps import CallerDep, SessionDep, SettingsDep
from service.errors import NotFound
from service.jobs import service
from service.jobs.models import Job
from service.providers.local.artifacts import Artifact
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
