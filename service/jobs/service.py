"""Jobs as the API sees them: create with pre-flight checks, rerun elsewhere, read, request an action, take a
provider's webhook, read metrics. The worker's side is in ``service.jobs.steps``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, select

from api_schemas.datasets import DatasetStatus
from api_schemas.jobs import JobCreate, JobRerun, JobStatus, check_job_metadata
from service.clock import utcnow
from service.datasets.service import get_dataset, get_ready_dataset
from service.errors import Conflict, InvalidInput
from service.jobs import metrics, states
from service.jobs.lifecycle import record_transition
from service.jobs.models import Job, JobEvent
from service.jobs.steps import FILES_PENDING
from service.providers import registry
from service.settings import Settings, get_settings
from service.tenancy import get_owned

S = JobStatus


def create_job(
    session: Session,
    project_id: str,
    req: JobCreate,
    settings: Settings | None = None,
    *,
    evaluation_request: dict[str, Any] | None = None,
    files_may_be_validating: bool = False,
) -> Job:
    """``evaluation_request``: ``req.evaluation`` as checked and stored by the evaluations domain
    (``check_job_evaluation_request``); jobs only keep it, and a subscriber to ``job.succeeded`` starts it.

    ``files_may_be_validating``: OpenAI's clients upload a file and create the job at once, and OpenAI accepts that
    (the job validates its files first). With it, a dataset still being validated is accepted; the job stays
    ``created`` until its datasets are checked, then runs the pre-flight checks, or fails naming the file and its
    first problems. A dataset that already failed is refused here either way."""
    if (req.evaluation is None) != (evaluation_request is None):
        raise ValueError("an evaluation request is checked by service.evaluations before the job is created")
    settings = settings or get_settings()
    provider_name = req.provider or settings.default_provider
    entry = registry.entry(provider_name)
    ok, reason = entry.availability()
    if not ok:
        raise InvalidInput(f"provider {provider_name!r} is not available: {reason}", code="provider_unavailable")
    if req.method.type.value not in entry.capabilities.methods:
        raise InvalidInput(
            f"provider {provider_name!r} does not support method {req.method.type.value!r}", code="method_unsupported"
        )
    try:
        # Strict like the rest of the request: "3" is not 3 epochs, true is not a batch size of 1.
        params = entry.params_model.model_validate(
            req.method.hyperparameters, strict=True, context={"method": req.method.type.value}
        )
    except (ValidationError, ValueError, TypeError) as exc:
        raise InvalidInput(
            f"invalid hyperparameters for {provider_name}: {exc}", code="invalid_hyperparameters"
        ) from exc
    ids = {"training": req.training_dataset_id}
    if req.validation_dataset_id:
        ids["validation"] = req.validation_dataset_id
    found = {role: get_dataset(session, project_id, ds_id) for role, ds_id in ids.items()}
    pending = files_may_be_validating and any(ds.status == DatasetStatus.validating for ds in found.values())
    for role, ds in found.items():
        if not (pending and ds.status == DatasetStatus.validating):
            get_ready_dataset(session, project_id, ds.id, role)  # raises, naming the dataset, unless it is ready
    train = found["training"]
    from service.jobs.preflight import Preflight, preflight

    hyperparameters = params.model_dump(exclude_none=True)
    if pending:
        check = Preflight(warnings=[dict(FILES_PENDING)])
    else:
        check = preflight(provider_name, req.model, train, hyperparameters, req.method.type.value)
    if req.max_cost_usd is not None and check.estimated_cost is not None and check.estimated_cost > req.max_cost_usd:
        raise InvalidInput(
            f"estimated cost ${check.estimated_cost} is above max_cost_usd ${req.max_cost_usd}",
            code="cost_limit_exceeded",
        )
    job = Job(
        project_id=project_id,
        provider=provider_name,
        base_model=req.model,
        method={"type": req.method.type.value, "hyperparameters": params.model_dump(exclude_none=True)},
        training_dataset_id=train.id,
        validation_dataset_id=req.validation_dataset_id,
        suffix=req.suffix,
        seed=req.seed,
        metadata_=dict(req.metadata),
        status=S.created,
        estimated_cost_usd=str(check.estimated_cost) if check.estimated_cost is not None else None,
        max_cost_usd=str(req.max_cost_usd) if req.max_cost_usd is not None else None,
        price_table_version=check.price_table_version,
        warnings=check.warnings,
        evaluation_request=evaluation_request,
        next_run_at=utcnow(),
    )
    session.add(job)
    session.flush()
    record_transition(session, job, None, S.created, "job created")
    return job


def rerun_job(session: Session, project_id: str, job_id: str, req: JobRerun, settings: Settings | None = None) -> Job:
    """The same recipe as ``job_id`` (datasets, method, hyperparameters, suffix, seed, metadata) on another provider or
    base model, linked to the original.

    Hyperparameters move through OpenAI's vocabulary into the new provider's own (``service.jobs.recipes``); values
    with no counterpart there are refused naming them, and ``req.hyperparameters`` replaces them all (checked against
    the new provider's typed hyperparameters, unknown names refused like any create).
    """
    from service.jobs.recipes import carry

    settings = settings or get_settings()
    old = get_job(session, project_id, job_id)
    provider = req.provider or old.provider
    entry = registry.entry(provider)
    carried = old.method.get("hyperparameters") or {}
    if req.hyperparameters is not None:
        hp, renamed = dict(req.hyperparameters), []
    else:
        moved = carry(registry.entry(old.provider), entry, carried)
        hp, renamed = moved.hyperparameters, moved.renamed
    metadata = {k: str(v) for k, v in old.metadata_.items()}
    try:
        check_job_metadata(metadata)
    except ValueError as exc:
        # A job created before the service's own pair was counted may hold 16: a clear 422, not a 500.
        raise InvalidInput(
            f"the job's metadata cannot be carried over: {exc}", code="invalid_metadata", param="metadata"
        ) from exc
    new = create_job(
        session,
        project_id,
        JobCreate(
            training_dataset_id=old.training_dataset_id,
            validation_dataset_id=old.validation_dataset_id,
            provider=provider,
            model=req.model or old.base_model,
            method={"type": old.method.get("type", "supervised"), "hyperparameters": hp},
            suffix=req.suffix or old.suffix,
            seed=old.seed,
            metadata=metadata,
            max_cost_usd=req.max_cost_usd,
        ),
        settings,
    )
    new.rerun_of_job_id = old.id
    if renamed:
        new.warnings = [
            *new.warnings,
            {
                "code": "hyperparameters_dropped",
                "message": f"not known to {provider} by these names: {', '.join(renamed)}; carried through OpenAI's "
                f"vocabulary as {hp}",
            },
        ]
    session.add(new)
    return new


def get_job(session: Session, project_id: str, job_id: str) -> Job:
    return get_owned(session, Job, job_id, project_id, "job")


def request_action(session: Session, project_id: str, job_id: str, action: str) -> Job:
    """Record a cancel / pause / resume; the worker carries it out at the provider on its next step."""
    job = get_job(session, project_id, job_id)
    status = S(job.status)
    if status not in states.ACTIONS[action]:
        raise Conflict(f"cannot {action} a job that is {status.value}", code=f"job_not_{action}able")
    entry = registry.entry(job.provider)
    if action in ("pause", "resume") and not entry.capabilities.pause_resume:
        raise Conflict(f"provider {job.provider!r} cannot {action} jobs", code="action_unsupported")
    if action == "cancel" and status in (S.created, S.uploading) and job.provider_job_id is None:
        # Nothing exists at the provider yet... unless a create is in flight; the step reconciles before creating.
        job.requested_action = "cancel"
    else:
        job.requested_action = action
    job.next_run_at = utcnow()
    job.updated_at = utcnow()
    session.add(job)
    return job


def apply_provider_webhook(
    session: Session, provider: str, provider_job_id: str, *, project_id: str | None = None
) -> Job | None:
    """A provider told us a job changed: make it due now; the worker fetches the truth.

    ``project_id``: the webhook was verified with that project's own secret, so it may only touch that project's jobs.
    """
    stmt = select(Job).where(Job.provider == provider, Job.provider_job_id == provider_job_id)
    if project_id is not None:
        stmt = stmt.where(Job.project_id == project_id)
    job = session.exec(stmt).first()
    if job is None or S(job.status) in states.TERMINAL:
        return job
    job.next_run_at = utcnow()
    session.add(job)
    return job


def job_metrics(session: Session, job: Job) -> dict[str, Any]:
    """Loss and token accuracy per step: the provider's metrics events, completed by its result file when the job
    succeeded (``complete`` says so)."""
    rows = list(
        session.exec(
            select(JobEvent)
            .where(JobEvent.job_id == job.id, JobEvent.type.in_(["metrics", metrics.RESULT_FILE_EVENT]))
            .order_by(JobEvent.created_at)
        )
    )
    points, counts = metrics.merge_points(
        (ev.data for ev in rows if ev.type == "metrics"),
        (ev.data for ev in rows if ev.type == metrics.RESULT_FILE_EVENT),
    )
    return {"job_id": job.id, "points": points, "steps": counts, "complete": counts["result_file"] > 0}
