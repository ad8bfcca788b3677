"""The deployment a project registered for a job's fine-tune, and what to tell it when there is none.

A registration is a job event (``type = "deployment"``): the job's history shows when which name was registered, and the
latest one is the name in use. No provider call is made: with an api-key the service can neither create nor read a
deployment (see ``service.providers.azure.deployment``); a wrong name shows as the provider's 404 when the model is
called.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from api_schemas.jobs import JobStatus
from service.errors import Conflict
from service.jobs.models import Job, JobEvent
from service.providers import registry
from service.providers.azure import deployment as azure
from service.settings import Settings

EVENT_TYPE = "deployment"


@dataclass(frozen=True)
class DeploymentView:
    job: Job
    deployment: str | None
    registered_at: datetime | None
    instructions: str
    command: str | None
    chat_completions_url: str | None


def needs_deployment(job: Job) -> bool:
    entry = registry.find(job.provider)  # a job of a provider no longer registered still reads
    return entry is not None and entry.capabilities.needs_deployment


def registered(session: Session, job: Job) -> JobEvent | None:
    return session.exec(
        select(JobEvent)
        .where(JobEvent.job_id == job.id, JobEvent.type == EVENT_TYPE)
        .order_by(col(JobEvent.created_at).desc(), col(JobEvent.id).desc())
    ).first()


def deployment_name(session: Session, job: Job) -> str:
    """The name to call the job's fine-tune by; Conflict (saying what to do) when none is registered."""
    event = registered(session, job)
    if event is None:
        raise Conflict(
            f"{job.provider} serves job {job.id}'s model only through a deployment: {_what_to_do(job, None)}",
            code="deployment_required",
        )
    return str(event.data["deployment"])


def register(session: Session, job: Job, name: str) -> JobEvent:
    if not needs_deployment(job):
        raise Conflict(f"provider {job.provider!r} serves fine-tunes without a deployment", code="deployment_unneeded")
    if JobStatus(job.status) != JobStatus.succeeded or not job.fine_tuned_model:
        raise Conflict(
            f"job {job.id} is {job.status}; a deployment is registered for a succeeded job's model",
            code="job_not_succeeded",
        )
    event = JobEvent(
        job_id=job.id,
        source="service",
        type=EVENT_TYPE,
        message=f"deployment {name} registered for {job.fine_tuned_model}",
        data={"deployment": name, "model": job.fine_tuned_model},
    )
    session.add(event)
    session.flush()
    return event


def view(session: Session, settings: Settings, job: Job) -> DeploymentView:
    if not needs_deployment(job):
        return DeploymentView(job, None, None, f"{job.provider} serves fine-tunes without a deployment", None, None)
    endpoint = _endpoint(session, settings, job)
    event = registered(session, job)
    name = str(event.data["deployment"]) if event is not None else None
    command = (
        azure.deploy_command(
            endpoint or "<ENDPOINT>", job.fine_tuned_model, name or azure.suggested_deployment_name(job.id)
        )
        if job.fine_tuned_model
        else None
    )
    url = f"{azure.v1_base_url(endpoint)}/chat/completions" if endpoint else None
    if event is not None:
        instructions = f"calls to {job.provider} use model={name}"
    else:
        instructions = _what_to_do(job, command)
    return DeploymentView(job, name, event.created_at if event else None, instructions, command, url)


def notice(job: Job) -> dict[str, str] | None:
    """The warning a succeeded job of such a provider carries (stateless: the job's output has no session)."""
    if not job.fine_tuned_model or JobStatus(job.status) != JobStatus.succeeded or not needs_deployment(job):
        return None
    return {"code": "deployment_required", "message": _what_to_do(job, None)}


def _what_to_do(job: Job, command: str | None) -> str:
    how = f"run `{command}`" if command else "create a deployment (GET /v1/jobs/{id}/deployment gives the command)"
    return (
        f"the model {job.fine_tuned_model} answers only through a deployment: {how.replace('{id}', job.id)}, "
        f"then register its name with PUT /v1/jobs/{job.id}/deployment"
    )


def _endpoint(session: Session, settings: Settings, job: Job) -> str | None:
    cred = registry.credential_for(session, job.project_id, job.provider)
    return (cred.base_url if cred is not None else None) or settings.azure_openai_endpoint
