"""The job lifecycle: create with pre-flight checks, then advance one step at a time until a terminal state.

Each step runs under a lease on the job row (``service.work.lease.leased``) and commits its transition, so a killed worker
loses at most the step in flight, and the step is safe to run again: uploads are looked up by content hash and
provider jobs by our job id before anything is created.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import Session, select

from api_schemas.datasets import DatasetStatus
from api_schemas.jobs import JobCreate, JobRerun, JobStatus
from service.clock import utcnow
from service.datasets.models import Dataset
from service.datasets.service import get_dataset, get_ready_dataset
from service.datasets.storage import blob_path
from service.db import session_scope
from service.errors import Conflict, InvalidInput
from service.jobs import metrics, states
from service.jobs.crashpoints import crash_point
from service.jobs.models import Job, JobCheckpoint, JobEvent
from service.logs import job_id_var
from service.metrics import record_provider_error
from service.providers import registry
from service.providers.base import HasResultFiles, JobSpec, ProviderError, ProviderJob, TrainingProvider
from service.providers.models import ProviderFile
from service.settings import Settings, get_settings
from service.tenancy import get_owned
from service.work import machine, names
from service.work.kind import StepFailure, WorkKind
from service.work.lease import leased, record_failure

log = logging.getLogger(__name__)

S = JobStatus


# Polling ------------------------------------------------------------------------------------------------------------


# With provider webhooks on, the end of a job is pushed to us: polls while queued or training only bring progress
# (events, metrics) and stand guard in case a webhook is lost, so they can be this much rarer.
WEBHOOK_POLL_FACTOR = 4.0


def poll_delay(
    status: S, estimated_finish: datetime | None, now: datetime, settings: Settings, *, webhooks: bool = False
) -> float:
    """How long to wait before asking the provider again: often while things change fast, rarely while training."""
    base = {S.submitted: 2.0, S.validating_files: 5.0, S.queued: 15.0, S.running: 30.0, S.paused: 120.0}.get(
        status, 30.0
    )
    if status == S.running and estimated_finish is not None:
        remaining = (estimated_finish - now).total_seconds()
        # Poll about ten times over the remaining time, more often near the end.
        base = max(10.0, min(120.0, remaining / 10)) if remaining > 0 else 10.0
    if webhooks and status in (S.queued, S.running):
        base *= WEBHOOK_POLL_FACTOR
    return max(settings.poll_min_s, min(settings.poll_max_s, base * settings.poll_scale))


# Creating -----------------------------------------------------------------------------------------------------------


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
        params = entry.params_model.model_validate(req.method.hyperparameters, strict=True)
    except (ValidationError, ValueError, TypeError) as exc:
        raise InvalidInput(
            f"invalid hyperparameters for {provider_name}: {exc}", code="invalid_hyperparameters"
        ) from exc
    datasets = [(req.training_dataset_id, "training")]
    if req.validation_dataset_id:
        datasets.append((req.validation_dataset_id, "validation"))
    pending = files_may_be_validating and any(
        get_dataset(session, project_id, ds_id).status == DatasetStatus.validating for ds_id, _ in datasets
    )
    if pending:
        train = get_dataset(session, project_id, req.training_dataset_id)
        for ds_id, role in datasets:
            if get_dataset(session, project_id, ds_id).status == DatasetStatus.invalid:
                get_ready_dataset(session, project_id, ds_id, role)  # raises, naming the dataset
    else:
        train = get_ready_dataset(session, project_id, req.training_dataset_id, "training")
        if req.validation_dataset_id:
            get_ready_dataset(session, project_id, req.validation_dataset_id, "validation")
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
    _record_transition(session, job, None, S.created, "job created")
    return job


def rerun_job(session: Session, project_id: str, job_id: str, req: JobRerun, settings: Settings | None = None) -> Job:
    """The same recipe as ``job_id`` on another provider or base model, linked to the original.

    Hyperparameters move over when the new provider's schema knows them (``n_epochs`` does everywhere); the rest are
    dropped and listed in a warning, so nothing changes silently.
    """
    settings = settings or get_settings()
    old = get_job(session, project_id, job_id)
    provider = req.provider or old.provider
    entry = registry.entry(provider)
    known = set(entry.params_model.model_fields)
    carried = old.method.get("hyperparameters") or {}
    if req.hyperparameters is not None:
        hp, dropped = dict(req.hyperparameters), []
    else:
        hp = {k: v for k, v in carried.items() if k in known}
        dropped = sorted(set(carried) - known)
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
            metadata={k: str(v) for k, v in old.metadata_.items()},
            max_cost_usd=req.max_cost_usd,
        ),
        settings,
    )
    new.rerun_of_job_id = old.id
    if dropped:
        new.warnings = [
            *new.warnings,
            {"code": "hyperparameters_dropped", "message": f"not known to {provider}: {', '.join(dropped)}"},
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


# Advancing ----------------------------------------------------------------------------------------------------------


def _record_transition(session: Session, job: Job, old: S | None, new: S, reason: str) -> None:
    session.add(
        JobEvent(
            job_id=job.id,
            source="service",
            type="status",
            message=f"{old.value if old else '-'} -> {new.value}: {reason}",
            data={"from": old.value if old else None, "to": new.value, "reason": reason},
        )
    )


def _view(job: Job) -> Any:
    from service.jobs.views import job_out

    return job_out(job)


def transition(session: Session, job: Job, new: S, reason: str) -> bool:
    def on_enter(old: S) -> None:
        now = utcnow()
        job.status_reason = reason
        if new == S.running and job.started_at is None:
            job.started_at = now
        if new in states.TERMINAL:
            job.finished_at = job.finished_at or now
            job.requested_action = None
        _record_transition(session, job, old, new, reason)

    return machine.transition(session, job, new, states.MACHINE, view=_view, on_enter=on_enter)


def _give_up(session: Session, job: Job, failure: StepFailure) -> None:
    """The job's step failed ``max_step_attempts`` times in a row: fail the job with the last error. (A cancel is
    carried out by the step itself, at the provider, so a job has no engine-side cancel: it must not stop watching a
    provider job that may still run.)"""
    message = f"the {job.status} step failed {failure.attempts} times in a row; last error: {failure.message}"
    job.error = {"code": "step_failed", "message": message, "param": None}
    transition(session, job, S.failed, "gave up after repeated errors")


JOBS = WorkKind("job", Job, names.ADVANCE_JOB, give_up=_give_up)


def advance(job_id: str, *, max_steps: int = 20) -> None:
    """Run due steps of one job until it waits on the provider (or ``max_steps``, to stay fair to other jobs)."""
    token = job_id_var.set(job_id)
    try:
        for _ in range(max_steps):
            if not _step(job_id):
                return
    finally:
        job_id_var.reset(token)


def _step(job_id: str) -> bool:
    """One step. Returns True when another step is due right away."""
    settings = get_settings()
    with leased(JOBS, job_id) as got:
        if got is None:
            return False
        session, job = got
        before = S(job.status)
        try:
            provider = registry.build_provider(session, settings, job.project_id, job.provider)
            _run_step(session, job, provider, settings)
        except ProviderError as exc:
            _provider_failure(session, job, exc, settings)
        now = utcnow()
        again = job.next_run_at is not None and job.next_run_at <= now
    if before == S.uploading and S(job.status) != S.uploading:
        crash_point("create.committed")
    return again


def _provider_failure(session: Session, job: Job, exc: ProviderError, settings: Settings) -> None:
    record_provider_error(job.provider, exc)
    if exc.transient:
        # Counted like a step that raised, but what the step did before the error is kept (committed).
        record_failure(session, JOBS, job, exc.message, retry_after=exc.retry_after, scale=settings.poll_scale)
        return
    job.error = exc.as_error()
    transition(session, job, S.failed, f"provider refused: {exc.message}")


def _run_step(session: Session, job: Job, provider: TrainingProvider, settings: Settings) -> None:
    status = S(job.status)
    now = utcnow()
    if status in states.TERMINAL:
        job.next_run_at = None
        return
    if job.requested_action == "cancel" and status in (S.created, S.uploading) and job.provider_job_id is None:
        found = provider.find_job(job.id)
        if found is None:
            transition(session, job, S.cancelled, "cancelled before submission")
            return
        _adopt(job, found)
    if status == S.created:
        if FILES_PENDING in (job.warnings or []) and not _files_checked(session, job, settings):
            return
        transition(session, job, S.uploading, "uploading files")
        job.next_run_at = now
        return
    if status == S.uploading:
        _upload_and_submit(session, job, provider, settings)
        return
    _follow(session, job, provider, settings)


# A job created while its datasets were still being validated carries this warning until they are checked.
FILES_PENDING = {
    "code": "files_validating",
    "message": "the job was created while its files were being validated; they are checked before it starts",
}


def _files_checked(session: Session, job: Job, settings: Settings) -> bool:
    """For a job created on datasets still being validated: wait for them, then fail the job naming the file and its
    first problems, or run the pre-flight checks the creation skipped. True when the job may go on."""
    from service.datasets.views import first_problems
    from service.jobs.preflight import preflight

    files = [("training_file", job.training_dataset_id)]
    if job.validation_dataset_id:
        files.append(("validation_file", job.validation_dataset_id))
    rows = {param: session.get(Dataset, ds_id) for param, ds_id in files}
    if any(ds is not None and ds.status == DatasetStatus.validating for ds in rows.values()):
        job.next_run_at = utcnow() + timedelta(seconds=max(settings.poll_min_s, 2.0 * settings.poll_scale))
        return False
    for param, ds in rows.items():
        if ds is None or ds.status != DatasetStatus.ready:
            problems = first_problems(ds.report) if ds is not None else "the file was deleted"
            job.error = {
                "code": "invalid_file",
                "message": f"{param} did not pass validation: {problems}",
                "param": param,
            }
            transition(session, job, S.failed, f"{param} did not pass validation")
            return False
    hyperparameters = (job.method or {}).get("hyperparameters") or {}
    try:
        check = preflight(job.provider, job.base_model, rows["training_file"], hyperparameters, job.method["type"])
    except InvalidInput as exc:
        job.error = {"code": exc.code, "message": exc.detail, "param": None}
        transition(session, job, S.failed, f"pre-flight check failed: {exc.detail}")
        return False
    if (
        job.max_cost_usd is not None
        and check.estimated_cost is not None
        and check.estimated_cost > Decimal(job.max_cost_usd)
    ):
        message = f"estimated cost ${check.estimated_cost} is above max_cost_usd ${job.max_cost_usd}"
        job.error = {"code": "cost_limit_exceeded", "message": message, "param": None}
        transition(session, job, S.failed, message)
        return False
    job.estimated_cost_usd = str(check.estimated_cost) if check.estimated_cost is not None else None
    job.price_table_version = check.price_table_version
    job.warnings = [w for w in job.warnings if w != FILES_PENDING] + check.warnings
    return True


# An upload claim belongs to a step that holds its job's lease; a claim older than the lease plus the time the upload
# could take at a slow 1 MiB/s belongs to a dead worker and is taken over.
UPLOAD_MIN_BYTES_PER_S = 1024**2


def upload_claim_ttl(settings: Settings, size_bytes: int) -> timedelta:
    return timedelta(seconds=settings.lease_s + size_bytes / UPLOAD_MIN_BYTES_PER_S)


def _file_filter(provider: TrainingProvider, sha256: str, purpose: str) -> tuple[Any, ...]:
    return (
        ProviderFile.provider == provider.name,
        ProviderFile.account == provider.account,
        ProviderFile.sha256 == sha256,
        ProviderFile.purpose == purpose,
    )


def _claim_upload(
    provider: TrainingProvider, sha256: str, purpose: str, ttl: timedelta
) -> tuple[datetime | None, str | None]:
    """Returns ``(our_claim_time, ready_file_id)``: the file is ready, or we now own the upload (claimed at that time),
    or someone else does (both None)."""
    now = utcnow()
    with session_scope() as s:
        row = s.exec(select(ProviderFile).where(*_file_filter(provider, sha256, purpose))).first()
        if row is None:
            s.add(
                ProviderFile(
                    provider=provider.name, account=provider.account, sha256=sha256, purpose=purpose, claimed_at=now
                )
            )
            try:
                s.flush()
                return now, None
            except sa.exc.IntegrityError:
                s.rollback()
                return None, None
        if row.status == "ready":
            return None, row.provider_file_id
        if row.claimed_at > now - ttl:
            return None, None
        res = s.execute(
            sa.update(ProviderFile)
            .where(ProviderFile.id == row.id, ProviderFile.claimed_at == row.claimed_at)
            .values(claimed_at=now)
        )
        return (now if res.rowcount == 1 else None), None


def _release_claim(provider: TrainingProvider, sha256: str, purpose: str, claimed_at: datetime) -> None:
    """Give up our claim after a failed upload so the next attempt (ours or another job's) starts at once.

    The failed call may still have created the file (an answer lost after the provider acted): the next claimant
    looks it up by name before uploading, so releasing never leads to a second copy. A claim someone else has taken
    over since (ours had expired) is left alone."""
    with session_scope() as s:
        s.execute(
            sa.delete(ProviderFile).where(
                *_file_filter(provider, sha256, purpose),
                ProviderFile.status != "ready",
                ProviderFile.claimed_at == claimed_at,
            )
        )


def _ensure_file(provider: TrainingProvider, dataset: Dataset, settings: Settings) -> str | None:
    """The provider's id of this dataset's file, uploading it if needed; None while another worker uploads it."""
    purpose = "fine-tune"
    ttl = upload_claim_ttl(settings, dataset.size_bytes or 0)
    claimed_at, file_id = _claim_upload(provider, dataset.sha256, purpose, ttl)
    if file_id is not None or claimed_at is None:
        return file_id
    crash_point("upload.claimed")
    try:
        # A previous owner may have uploaded and died before recording it: the provider knows the file by its hash.
        file_id = provider.find_file(sha256=dataset.sha256, purpose=purpose)
        if file_id is None:
            file_id = provider.upload_file(blob_path(settings, dataset.sha256), sha256=dataset.sha256, purpose=purpose)
    except ProviderError:
        _release_claim(provider, dataset.sha256, purpose, claimed_at)
        raise
    crash_point("upload.sent")
    with session_scope() as s:
        s.execute(
            sa.update(ProviderFile)
            .where(*_file_filter(provider, dataset.sha256, purpose))
            .values(provider_file_id=file_id, status="ready")
        )
    return file_id


def _adopt(job: Job, pj: ProviderJob) -> None:
    job.provider_job_id = pj.id
    job.provider_status = pj.raw_status
    job.provider_data = pj.raw


def _upload_and_submit(session: Session, job: Job, provider: TrainingProvider, settings: Settings) -> None:
    from service.catalog import fine_tune_name

    # Every file is settled before the job row is touched: _ensure_file writes in its own short transactions, and on
    # SQLite a pending change flushed from this session would hold the write lock they wait for.
    train_ds = session.get(Dataset, job.training_dataset_id)
    val_ds = session.get(Dataset, job.validation_dataset_id) if job.validation_dataset_id else None
    train_file = job.provider_training_file_id or _ensure_file(provider, train_ds, settings)
    val_file = job.provider_validation_file_id or (_ensure_file(provider, val_ds, settings) if val_ds else None)
    job.provider_training_file_id, job.provider_validation_file_id = train_file, val_file
    if train_file is None or (val_ds is not None and val_file is None):
        # Another job is uploading the same file; look again shortly.
        job.next_run_at = utcnow() + timedelta(seconds=max(settings.poll_min_s, 2.0 * settings.poll_scale))
        return
    crash_point("upload.recorded")
    # Reconcile before creating: a previous attempt may have created the job and died before recording it.
    pj = provider.find_job(job.id)
    if pj is None:
        pj = provider.create_job(
            JobSpec(
                our_job_id=job.id,
                model=job.base_model,
                method=job.method.get("type", "supervised"),
                hyperparameters=job.method.get("hyperparameters") or {},
                training_file=job.provider_training_file_id,
                validation_file=job.provider_validation_file_id,
                suffix=job.suffix,
                seed=job.seed,
                metadata={k: str(v) for k, v in job.metadata_.items()},
                model_name=fine_tune_name(session, job),
            )
        )
        crash_point("create.sent")
        reason = f"submitted to {provider.name} as {pj.id}"
    else:
        reason = f"found existing {provider.name} job {pj.id} (reconciled)"
    _adopt(job, pj)
    transition(session, job, S.submitted, reason)
    # The provider job exists: record its id in its own commit before anything else can fail, so that a failure in
    # what follows (syncing events, say) cannot roll it back and make the retry create a second job.
    session.commit()
    _apply_provider_state(session, job, pj, provider, settings)


def _follow(session: Session, job: Job, provider: TrainingProvider, settings: Settings) -> None:
    assert job.provider_job_id
    action = job.requested_action
    if action:
        pj = {"cancel": provider.cancel, "pause": provider.pause, "resume": provider.resume}[action](
            job.provider_job_id
        )
        job.requested_action = None
        session.add(
            JobEvent(job_id=job.id, source="service", type="message", message=f"{action} requested at the provider")
        )
    else:
        pj = provider.get_job(job.provider_job_id)
    _apply_provider_state(session, job, pj, provider, settings)


def _sync_events(session: Session, job: Job, provider: TrainingProvider) -> None:
    if not provider.capabilities.events:
        return
    new = provider.list_events(job.provider_job_id, after=job.provider_events_cursor)
    known = (
        set(
            session.exec(
                select(JobEvent.provider_event_id).where(
                    JobEvent.job_id == job.id, JobEvent.provider_event_id.in_([e.id for e in new])
                )
            )
        )
        if new
        else set()
    )
    for ev in new:
        # A provider may send one event twice (repeated pages, overlapping syncs): the first copy is kept.
        if ev.id in known:
            continue
        known.add(ev.id)
        session.add(
            JobEvent(
                job_id=job.id,
                source="provider",
                type=ev.type,
                level=ev.level,
                message=ev.message,
                data=ev.data,
                provider_event_id=ev.id,
                created_at=ev.created_at,
            )
        )
    if new:
        job.provider_events_cursor = new[-1].id


def _sync_checkpoints(session: Session, job: Job, provider: TrainingProvider) -> None:
    if not provider.capabilities.checkpoints:
        return
    stored = session.exec(select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)).all()
    have_steps = {c.step for c in stored}
    have_ids = {c.provider_checkpoint_id for c in stored if c.provider_checkpoint_id}
    for cp in provider.list_checkpoints(job.provider_job_id):
        # Skipped, not an IntegrityError: a checkpoint we hold (by step or by the provider's id), or one answered twice.
        if cp.step not in have_steps and cp.id not in have_ids:
            have_steps.add(cp.step)
            have_ids.add(cp.id)
            session.add(
                JobCheckpoint(
                    job_id=job.id,
                    step=cp.step,
                    model=cp.model,
                    provider_checkpoint_id=cp.id,
                    metrics=cp.metrics,
                    created_at=cp.created_at or utcnow(),
                )
            )


def _apply_provider_state(
    session: Session, job: Job, pj: ProviderJob, provider: TrainingProvider, settings: Settings
) -> None:
    now = utcnow()
    job.provider_status = pj.raw_status
    job.provider_data = pj.raw
    job.estimated_finish_at = pj.estimated_finish
    _sync_events(session, job, provider)
    target = pj.status
    if target is not None and target != S(job.status):
        if states.can_transition(S(job.status), target):
            if target in states.TERMINAL:
                _finish(session, job, pj, provider)
            transition(session, job, target, f"provider status {pj.raw_status}")
        else:
            log.warning("ignoring provider status %s for job %s in %s", pj.raw_status, job.id, job.status)
    status = S(job.status)
    if status in states.TERMINAL:
        job.next_run_at = None
        return
    webhooks = registry.webhooks_configured(session, settings, job.project_id, job.provider)
    delay = poll_delay(status, pj.estimated_finish, now, settings, webhooks=webhooks)
    job.next_run_at = now + timedelta(seconds=delay)


def _finish(session: Session, job: Job, pj: ProviderJob, provider: TrainingProvider) -> None:
    job.fine_tuned_model = pj.fine_tuned_model
    job.trained_tokens = pj.trained_tokens
    job.finished_at = pj.finished_at or utcnow()
    if pj.error:
        job.error = {"code": pj.error.get("code"), "message": pj.error.get("message"), "param": pj.error.get("param")}
    if pj.trained_tokens:
        from service.pricing import training_cost

        try:
            cost = training_cost(job.base_model, pj.trained_tokens)
            job.actual_cost_usd = str(cost.amount if hasattr(cost, "amount") else cost)
        except Exception:  # an unknown model has no price; the job still succeeded
            log.info("no training price for %s", job.base_model)
    _sync_checkpoints(session, job, provider)
    if pj.status == S.succeeded:
        _fetch_result_files(session, job, pj, provider)


def _fetch_result_files(session: Session, job: Job, pj: ProviderJob, provider: TrainingProvider) -> None:
    """Keep the result files' per-step metrics: events may have gaps, the result file is the complete curve.

    A result file we cannot get does not hold back the job's success (the model is there); it is noted on the job."""
    if not pj.result_files or not isinstance(provider, HasResultFiles):
        return
    known = set(
        session.exec(
            select(JobEvent.provider_event_id).where(
                JobEvent.job_id == job.id, JobEvent.type == metrics.RESULT_FILE_EVENT
            )
        )
    )
    if all(f"result_file:{f}" in known for f in pj.result_files):
        return
    try:
        files = provider.result_metrics(pj)
    except ProviderError as exc:
        log.warning("result files of job %s unavailable: %s", job.id, exc.message)
        session.add(
            JobEvent(
                job_id=job.id,
                source="service",
                type="message",
                level="warning",
                message=f"result file unavailable, metrics come from events only: {exc.message}",
            )
        )
        return
    for rf in files:
        if f"result_file:{rf.file_id}" in known:
            continue
        session.add(
            JobEvent(
                job_id=job.id,
                source="provider",
                type=metrics.RESULT_FILE_EVENT,
                message=f"result file {rf.file_id}: {len(rf.rows)} steps",
                data=metrics.result_event_data(rf.file_id, rf.columns, rf.rows),
                provider_event_id=f"result_file:{rf.file_id}",
            )
        )


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
