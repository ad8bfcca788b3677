"""Advancing a job one step at a time until a terminal state.

Each step runs under a lease on the job row (``service.work.lease.leased``) and commits its transition, so a killed worker
loses at most the step in flight, and the step is safe to run again: uploads are looked up by content hash and
provider jobs by our job id before anything is created. A step that fails counts toward the engine's bound."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from sqlmodel import Session

from api_schemas.datasets import DatasetStatus
from api_schemas.jobs import JobStatus
from service.clock import utcnow
from service.datasets.models import Dataset
from service.db import ReleasingCalls
from service.errors import InvalidInput
from service.jobs import states
from service.jobs.anomalies import merge, provider_anomalies
from service.jobs.crashpoints import crash_point
from service.jobs.lifecycle import JOBS, transition
from service.jobs.models import Job, JobEvent
from service.jobs.polling import poll_delay
from service.jobs.sync import fetch_result_files, sync_checkpoints, sync_events
from service.jobs.uploads import ensure_file
from service.logs import job_id_var
from service.metrics import record_provider_error
from service.providers import registry
from service.providers.base import JobSpec, ProviderError, ProviderJob, TrainingProvider
from service.settings import Settings, get_settings
from service.work.lease import leased, record_failure

log = logging.getLogger(__name__)

S = JobStatus


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
            # No pooled connection (or open transaction) waits on the provider while the step has written nothing.
            _run_step(session, job, ReleasingCalls(provider, session), settings)
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


def _adopt(job: Job, pj: ProviderJob) -> None:
    job.provider_job_id = pj.id
    job.provider_status = pj.raw_status
    job.provider_data = pj.raw


def _upload_and_submit(session: Session, job: Job, provider: TrainingProvider, settings: Settings) -> None:
    from service.catalog import fine_tune_name

    # Every file is settled before the job row is touched: ensure_file writes in its own short transactions, and on
    # SQLite a pending change flushed from this session would hold the write lock they wait for.
    train_ds = session.get(Dataset, job.training_dataset_id)
    val_ds = session.get(Dataset, job.validation_dataset_id) if job.validation_dataset_id else None
    train_file = job.provider_training_file_id or ensure_file(provider, train_ds, settings)
    val_file = job.provider_validation_file_id or (ensure_file(provider, val_ds, settings) if val_ds else None)
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


def _apply_provider_state(
    session: Session, job: Job, pj: ProviderJob, provider: TrainingProvider, settings: Settings
) -> None:
    now = utcnow()
    job.provider_status = pj.raw_status
    job.provider_data = pj.raw
    job.estimated_finish_at = pj.estimated_finish
    found = provider_anomalies(pj)
    if found:
        log.warning("job %s: odd provider answer: %s", job.id, "; ".join(a["message"] for a in found))
        job.provider_anomalies = merge(job.provider_anomalies, found)
    sync_events(session, job, provider)
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
    # A value flagged as an anomaly is not stored as a fact, and nothing (a cost) is computed from it.
    odd = {a["field"] for a in provider_anomalies(pj)}
    job.fine_tuned_model = pj.fine_tuned_model
    job.trained_tokens = None if "trained_tokens" in odd else pj.trained_tokens
    job.finished_at = pj.finished_at or utcnow()
    if pj.error:
        job.error = {"code": pj.error.get("code"), "message": pj.error.get("message"), "param": pj.error.get("param")}
    if "trained_tokens" in odd:
        log.info("job %s: no cost computed: the provider's trained_tokens (%s) is an anomaly", job.id, pj.trained_tokens)
    elif pj.trained_tokens:
        from service.pricing import training_cost

        try:
            quote = registry.entry(job.provider).training_quote
            if quote is not None:
                # A provider with its own price list: trained tokens count every epoch, so they are one pass.
                hp = {**((job.method or {}).get("hyperparameters") or {}), "n_epochs": 1}
                cost = quote(job.base_model, pj.trained_tokens, hp, (job.method or {}).get("type", "supervised"))
                cost = cost.amount_usd
            else:
                cost = training_cost(job.base_model, pj.trained_tokens)
            job.actual_cost_usd = str(cost.amount if hasattr(cost, "amount") else cost)
        except Exception:  # an unknown model has no price; the job still succeeded
            log.info("no training price for %s", job.base_model)
    sync_checkpoints(session, job, provider)
    if pj.status == S.succeeded:
        fetch_result_files(session, job, pj, provider)
