from __future__ import annotations

from api_schemas.jobs import CheckpointOut, JobError, JobEventOut, JobMethod, JobOut
from service.clock import utcnow
from service.deployments.service import notice as deployment_notice
from service.jobs.deprecation import job_serving_warnings
from service.jobs.metrics import RESULT_FILE_EVENT, result_event_summary
from service.jobs.models import Job, JobCheckpoint, JobEvent
from service.work.views import last_error_out


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        project_id=job.project_id,
        provider=job.provider,
        model=job.base_model,
        method=JobMethod(**job.method) if job.method else JobMethod(),
        training_dataset_id=job.training_dataset_id,
        validation_dataset_id=job.validation_dataset_id,
        suffix=job.suffix,
        seed=job.seed,
        metadata=job.metadata_,
        status=job.status,
        status_reason=job.status_reason,
        provider_status=job.provider_status,
        provider_job_id=job.provider_job_id,
        fine_tuned_model=job.fine_tuned_model,
        trained_tokens=job.trained_tokens,
        estimated_cost_usd=job.estimated_cost_usd,
        actual_cost_usd=job.actual_cost_usd,
        max_cost_usd=job.max_cost_usd,
        price_table_version=job.price_table_version,
        error=JobError(**job.error) if job.error and job.error.get("message") else None,
        last_error=last_error_out(job),
        attempts=job.attempts,
        # Stored warnings are those of the moment the job was created; shutdown warnings depend on today.
        warnings=[
            *job.warnings,
            *job_serving_warnings(job.fine_tuned_model, job.warnings, utcnow().date()),
            *filter(None, [deployment_notice(job)]),
        ],
        provider_anomalies=job.provider_anomalies or [],
        requested_action=job.requested_action,
        rerun_of_job_id=job.rerun_of_job_id,
        evaluation_id=job.evaluation_id,
        estimated_finish_at=job.estimated_finish_at,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def event_out(ev: JobEvent) -> JobEventOut:
    return JobEventOut(
        id=ev.id,
        job_id=ev.job_id,
        source=ev.source,
        type=ev.type,
        level=ev.level,
        message=ev.message,
        # A result file's rows are served by /metrics; the event says that it came and what it holds.
        data=result_event_summary(ev.data) if ev.type == RESULT_FILE_EVENT else ev.data,
        created_at=ev.created_at,
    )


def checkpoint_out(cp: JobCheckpoint) -> CheckpointOut:
    return CheckpointOut(
        id=cp.id, job_id=cp.job_id, step=cp.step, model=cp.model, metrics=cp.metrics, created_at=cp.created_at
    )
