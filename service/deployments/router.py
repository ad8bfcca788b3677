"""``/v1/jobs/{id}/deployment``: how a job's fine-tune is deployed at a provider that needs it, and the name the
project registered for it."""

from __future__ import annotations

from fastapi import APIRouter

from api_schemas.common import problem_responses
from api_schemas.deployments import DeploymentOut, DeploymentRegister
from service.api.deps import CallerDep, SessionDep, SettingsDep
from service.deployments import service
from service.jobs.service import get_job

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _out(v: service.DeploymentView) -> DeploymentOut:
    return DeploymentOut(
        job_id=v.job.id,
        provider=v.job.provider,
        fine_tuned_model=v.job.fine_tuned_model,
        deployment=v.deployment,
        registered_at=v.registered_at,
        instructions=v.instructions,
        command=v.command,
        chat_completions_url=v.chat_completions_url,
    )


@router.get(
    "/{job_id}/deployment",
    response_model=DeploymentOut,
    responses=problem_responses(401, 404),
    summary="How the job's fine-tune is deployed (Azure serves fine-tunes only through a deployment)",
)
def get_deployment(job_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep) -> DeploymentOut:
    return _out(service.view(session, settings, get_job(session, caller.project_id, job_id)))


@router.put(
    "/{job_id}/deployment",
    response_model=DeploymentOut,
    responses=problem_responses(401, 404, 409, 422),
    summary="Register the deployment that serves the job's fine-tune; evaluations and chat completions then use it",
)
def put_deployment(
    job_id: str, body: DeploymentRegister, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> DeploymentOut:
    job = get_job(session, caller.project_id, job_id)
    service.register(session, job, body.name)
    session.commit()
    return _out(service.view(session, settings, job))
