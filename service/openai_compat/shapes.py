"""Our rows in OpenAI's shapes. Translation only: every value comes from the domain's own row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api_schemas.datasets import DatasetStatus
from api_schemas.jobs import JobStatus
from api_schemas.openai_compat import (
    OpenAIFile,
    OpenAIFineTuningJob,
    OpenAIFineTuningJobCheckpoint,
    OpenAIFineTuningJobEvent,
    OpenAIJobError,
)
from service.datasets.models import Dataset
from service.datasets.views import first_problems
from service.jobs.models import Job, JobCheckpoint, JobEvent
from service.providers import registry
from service.providers.naming import checkpoint_name

FILE_PURPOSE = "fine-tune"
FILE_STATUS = {DatasetStatus.validating: "uploaded", DatasetStatus.ready: "processed", DatasetStatus.invalid: "error"}

# Our job statuses before the provider has the job are all "the files are being checked and sent" to an OpenAI client.
JOB_STATUS = {
    JobStatus.created: "validating_files",
    JobStatus.uploading: "validating_files",
    JobStatus.submitted: "validating_files",
    JobStatus.validating_files: "validating_files",
    JobStatus.queued: "queued",
    JobStatus.running: "running",
    JobStatus.paused: "paused",
    JobStatus.succeeded: "succeeded",
    JobStatus.failed: "failed",
    JobStatus.cancelled: "cancelled",
}
EVENT_LEVEL = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}


def unix(ts: datetime | None) -> int | None:
    return int(ts.timestamp()) if ts is not None else None


def file_out(ds: Dataset) -> OpenAIFile:
    status = FILE_STATUS.get(DatasetStatus(ds.status), "error")
    return OpenAIFile(
        id=ds.id,
        bytes=ds.size_bytes,
        created_at=unix(ds.created_at) or 0,
        filename=ds.filename,
        purpose=FILE_PURPOSE,
        status=status,
        status_details=first_problems(ds.report) if status == "error" else None,
    )


def _hyperparameters(job: Job) -> dict[str, Any]:
    method = job.method or {}
    params = method.get("hyperparameters") or {}
    try:
        return registry.entry(job.provider).hyperparameters.to_openai(params)
    except Exception:  # a row written by an older version: show what is stored rather than fail the read
        return dict(params)


def _method(job: Job, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    kind = (job.method or {}).get("type") or "supervised"
    return {"type": kind, kind: {"hyperparameters": hyperparameters}}


def _error(job: Job) -> OpenAIJobError | None:
    if job.status != JobStatus.failed:
        return None
    err = job.error or {}
    return OpenAIJobError(
        code=str(err.get("code") or "failed"),
        message=str(err.get("message") or job.status_reason or "the job failed"),
        param=err.get("param"),
    )


def job_out(job: Job) -> OpenAIFineTuningJob:
    hyperparameters = _hyperparameters(job)
    metadata = {str(k): str(v) for k, v in (job.metadata_ or {}).items()}
    return OpenAIFineTuningJob(
        id=job.id,
        created_at=unix(job.created_at) or 0,
        error=_error(job),
        fine_tuned_model=job.fine_tuned_model,
        finished_at=unix(job.finished_at),
        hyperparameters=hyperparameters,
        model=job.base_model,
        organization_id=job.project_id,
        result_files=[],
        status=JOB_STATUS.get(JobStatus(job.status), job.status),
        trained_tokens=job.trained_tokens,
        training_file=job.training_dataset_id,
        validation_file=job.validation_dataset_id,
        seed=job.seed if job.seed is not None else 0,
        estimated_finish=unix(job.estimated_finish_at),
        method=_method(job, hyperparameters),
        metadata=metadata or None,
        provider=job.provider,
    )


def event_out(event: JobEvent) -> OpenAIFineTuningJobEvent:
    return OpenAIFineTuningJobEvent(
        id=event.id,
        created_at=unix(event.created_at) or 0,
        level=EVENT_LEVEL.get(event.level, "info"),  # type: ignore[arg-type]
        message=event.message or event.type,
        type="metrics" if event.type == "metrics" else "message",
        data=event.data or {},
    )


def checkpoint_out(job: Job, checkpoint: JobCheckpoint, model_name: str) -> OpenAIFineTuningJobCheckpoint:
    """``model_name``: the job's fine-tune name (``service.providers.naming``); a provider that names its checkpoints
    itself (OpenAI) keeps its own name."""
    model = checkpoint.model
    if not model or not model.startswith("ft:"):
        model = checkpoint_name(model_name, checkpoint.step)
    metrics = {k: float(v) for k, v in (checkpoint.metrics or {}).items() if isinstance(v, int | float)}
    metrics.setdefault("step", float(checkpoint.step))
    return OpenAIFineTuningJobCheckpoint(
        id=checkpoint.id,
        created_at=unix(checkpoint.created_at) or 0,
        fine_tuned_model_checkpoint=model,
        step_number=checkpoint.step,
        metrics=metrics,
        fine_tuning_job_id=job.id,
    )
