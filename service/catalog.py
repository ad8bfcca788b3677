"""The models a project can train or call: base models of the available providers and the project's own fine-tunes,
under the names OpenAI's SDK uses (``ft:...`` for fine-tunes, ``...:ckpt-step-N`` for their checkpoints).

It answers from the database and the packaged tables only: listing models never calls a provider.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, select

from api_schemas.jobs import JobStatus
from service.clock import utcnow
from service.errors import Conflict, InvalidInput, NotFound
from service.jobs.models import Job, JobCheckpoint
from service.projects.models import Project
from service.providers import registry
from service.providers.naming import checkpoint_name, job_model_name, parse_name
from service.settings import Settings
from service.tenancy import find_owned

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogModel:
    id: str
    created: int
    owned_by: str
    provider: str
    job_id: str | None = None
    checkpoint_step: int | None = None


def _project_name(session: Session, project_id: str) -> str:
    project = session.get(Project, project_id)
    return project.name if project is not None else project_id


def fine_tune_name(session: Session, job: Job) -> str:
    return job_model_name(
        fine_tuned_model=job.fine_tuned_model,
        base_model=job.base_model,
        project_name=_project_name(session, job.project_id),
        suffix=job.suffix,
        job_id=job.id,
    )


def _base_models(session: Session, project_id: str, settings: Settings) -> list[CatalogModel]:
    out: list[CatalogModel] = []
    for entry in registry.entries():
        ok, _reason = entry.availability()
        if not ok:
            continue
        for name, created in entry.base_models(session, project_id, settings):
            out.append(CatalogModel(id=name, created=created, owned_by=entry.name, provider=entry.name))
    return out


def _fine_tunes(session: Session, project_id: str) -> list[Job]:
    stmt = select(Job).where(
        Job.project_id == project_id,
        Job.status == JobStatus.succeeded,
        Job.fine_tuned_model.is_not(None),  # type: ignore[union-attr]
        Job.model_deleted_at.is_(None),  # type: ignore[union-attr]
    )
    return list(session.exec(stmt.order_by(Job.id.desc())))


def _fine_tune_entry(session: Session, job: Job) -> CatalogModel:
    finished = job.finished_at or job.updated_at
    return CatalogModel(
        id=fine_tune_name(session, job),
        created=int(finished.timestamp()),
        owned_by=job.project_id,
        provider=job.provider,
        job_id=job.id,
    )


def list_models(session: Session, project_id: str, settings: Settings) -> list[CatalogModel]:
    return [_fine_tune_entry(session, j) for j in _fine_tunes(session, project_id)] + _base_models(
        session, project_id, settings
    )


def find_fine_tune(session: Session, project_id: str, name: str) -> tuple[Job, int | None] | None:
    """The project's job (and checkpoint step) a fine-tune name denotes; None when the name is not one of ours or not
    this project's (the caller answers 404 either way, so names of other projects are indistinguishable)."""
    parsed = parse_name(name)
    if parsed is None:
        job = session.exec(select(Job).where(Job.project_id == project_id, Job.fine_tuned_model == name)).first()
        return (job, None) if job is not None else None
    job = find_owned(session, Job, parsed.job_id, project_id)
    if job is None or fine_tune_name(session, job) != parsed.model_name:
        return None
    return job, parsed.step


def get_model(session: Session, project_id: str, name: str, settings: Settings) -> CatalogModel:
    found = find_fine_tune(session, project_id, name)
    if found is not None:
        job, step = found
        if step is None:
            if job.status != JobStatus.succeeded or job.model_deleted_at is not None:
                raise NotFound("model", name)
            return _fine_tune_entry(session, job)
        checkpoint = session.exec(
            select(JobCheckpoint).where(JobCheckpoint.job_id == job.id, JobCheckpoint.step == step)
        ).first()
        if checkpoint is None:
            raise NotFound("model", name)
        return CatalogModel(
            id=checkpoint_name(fine_tune_name(session, job), step),
            created=int(checkpoint.created_at.timestamp()),
            owned_by=job.project_id,
            provider=job.provider,
            job_id=job.id,
            checkpoint_step=step,
        )
    for model in _base_models(session, project_id, settings):
        if model.id == name:
            return model
    raise NotFound("model", name)


def delete_fine_tune(session: Session, project_id: str, name: str) -> str:
    """Retire a fine-tune: it leaves the model list and stops answering. Base models and checkpoints cannot be
    deleted (as at OpenAI)."""
    found = find_fine_tune(session, project_id, name)
    if found is None:
        raise NotFound("model", name)
    job, step = found
    if step is not None:
        raise InvalidInput("checkpoints cannot be deleted; delete the fine-tuned model", code="model_not_deletable")
    if job.status != JobStatus.succeeded or job.model_deleted_at is not None:
        raise NotFound("model", name)
    job.model_deleted_at = utcnow()
    session.add(job)
    return fine_tune_name(session, job)


def provider_for_model(session: Session, project_id: str, model: str, settings: Settings) -> str:
    """The provider that trains ``model``: a fine-tune of this project trains further where it was made; otherwise the
    first provider whose registry entry claims the name; otherwise the server's default."""
    found = find_fine_tune(session, project_id, model)
    if found is not None:
        job, step = found
        if step is not None:
            raise Conflict("a checkpoint cannot be trained further; use the fine-tuned model", code="invalid_model")
        return job.provider
    # A base model the project can reach by name is trained where it is listed: names overlap between providers
    # (the local provider claims every Hugging Face id, Together's models are written the same way).
    listed = next((m.provider for m in _base_models(session, project_id, settings) if m.id == model), None)
    if listed is not None:
        return listed
    for entry in registry.entries():
        if entry.claims_model(model):
            return entry.name
    return settings.default_provider


def inference_candidate(session: Session, project_id: str, name: str, settings: Settings) -> dict[str, object]:
    """How to call ``name``, as an evaluation candidate (``service.evaluations.targets`` turns it into a target, the
    one place that knows how each provider's models are called): a fine-tune or checkpoint of this project, a listed
    base model, or a name a provider claims (that provider's own checks decide whether this project may use it)."""
    try:
        model = get_model(session, project_id, name, settings)
    except NotFound:
        claimed = [e.name for e in registry.entries() if e.claims_model(name)] if parse_name(name) is None else []
        if not claimed:
            raise
        return {"kind": "model", "name": "serving", "provider": claimed[0], "model": name}
    if model.job_id is not None:
        return {"kind": "job", "name": "serving", "job_id": model.job_id, "checkpoint_step": model.checkpoint_step}
    return {"kind": "model", "name": "serving", "provider": model.provider, "model": name}
