"""Fine-tuning jobs: request checks, and the life of a job as emulated time passes.

validating_files -> queued -> running (steps, metrics events, checkpoints in the last epochs) -> succeeded, or failed /
cancelled. Paused jobs keep their place and stop advancing. All functions run under the store lock.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

from . import job_params, metrics, params, training_data
from .config import ODD_JOB_ANSWERS, ODD_JOB_KEY, JobError
from .errors import invalid, not_found
from .store import CheckpointRecord, EventRecord, FileRecord, FineTunedModel, JobRecord

# OpenAI keeps checkpoints of the last three epochs.
CHECKPOINT_EPOCHS = 3

if TYPE_CHECKING:
    from .core import EmulatorCore


def _training_input(core: EmulatorCore, file_id: str | None, param: str) -> None:
    if file_id is None:
        return
    record = core.store.files.get(file_id)
    if record is None:
        raise invalid(f"invalid {param}: {file_id}", param=param)
    if record.purpose != "fine-tune":
        raise invalid(
            f"File {file_id} has purpose '{record.purpose}', but fine-tuning needs files uploaded with purpose "
            "'fine-tune'.",
            param=param,
        )


def create(core: EmulatorCore, body: dict[str, Any]) -> JobRecord:
    azure = core.config.azure
    if azure is not None:
        body = dict(body)
        params.one_of("trainingType", body.pop("trainingType", "standard"), job_params.AZURE_TRAINING_TYPES)
    params.reject_unknown(body, job_params.CREATE_FIELDS)
    model_name = params.required_str(body, "model")
    training_file = params.required_str(body, "training_file")
    validation_file = params.optional_str(body, "validation_file")
    suffix = params.optional_str(body, "suffix", min_len=1, max_len=64)
    seed_raw = body.get("seed")
    seed = (
        core.rng.randint(0, job_params.SEED_MAX)
        if seed_raw is None
        else params.int_in_range("seed", seed_raw, low=0, high=job_params.SEED_MAX)
    )
    metadata = params.metadata(body)
    integrations = job_params.parse_integrations(body)
    method_type, hyperparameters, method_fields = job_params.parse_method(body)

    resolved = core.catalog.resolve(model_name, core.store)
    if resolved is None or resolved.checkpoint or method_type not in resolved.spec.fine_tuning_methods:
        if resolved is not None and resolved.spec.fine_tuning_methods and not resolved.checkpoint:
            raise invalid(
                f"Model {model_name} does not support the {method_type} fine-tuning method.",
                param="method.type",
                code="invalid_value",
            )
        raise invalid(
            f"Model {model_name} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )
    _training_input(core, training_file, "training_file")
    _training_input(core, validation_file, "validation_file")

    now = core.clock.now()
    job = JobRecord(
        id=core.ids.new("job"),
        created_at=int(now),
        model=resolved.id,
        base=resolved.spec,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        metadata=metadata,
        integrations=integrations,
        method_type=method_type,
        hyperparameters=hyperparameters,
        organization_id=core.config.organization_id,
        extra_method_fields=method_fields,
        cursor=now,
        has_validation=validation_file is not None,
        model_tag=core.ids.new("model_tag"),
        status_names=dict(azure.status_names) if azure is not None else {},
    )
    for rule in core.config.outcome_rules:
        if rule.matches(suffix, metadata):
            job.fail_error = rule.error
            job.fail_fraction = rule.fail_at
            break
    odd = (metadata or {}).get(ODD_JOB_KEY)
    if odd in ODD_JOB_ANSWERS:
        job.odd = odd
        if odd == "failed_without_error":
            job.fail_error, job.fail_fraction = JobError(code="server_error", message="Fine-tuning failed."), 0.5
    core.store.jobs[job.id] = job
    _event(core, job, now, f"Created fine-tuning job: {job.id}")
    validating = f"Validating training file: {training_file}"
    if validation_file:
        validating += f" and validation file: {validation_file}"
    _event(core, job, now, validating)
    return job


def get(core: EmulatorCore, job_id: str) -> JobRecord:
    job = core.store.jobs.get(job_id)
    if job is None:
        raise not_found(f"Could not find fine-tuning job {job_id}.", param="fine_tuning_job_id", code="not_found")
    return job


def _event(
    core: EmulatorCore,
    job: JobRecord,
    at: float,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    job.events.append(
        EventRecord(
            id=core.ids.new("event"),
            created_at=int(at),
            level=level,
            message=message,
            type=type,
            data=data or {},
            seq=core.store.next_seq(),
        )
    )


def _auto_epochs(n_examples: int) -> int:
    # OpenAI's data-prep cookbook: 3 epochs, more for tiny sets and fewer for huge ones.
    if n_examples * 3 < 100:
        return min(25, 100 // max(1, n_examples))
    if n_examples * 3 > 25000:
        return max(1, 25000 // n_examples)
    return 3


def _resolve_hyperparameters(job: JobRecord) -> None:
    hp = job.hyperparameters
    if hp["n_epochs"] == "auto":
        hp["n_epochs"] = _auto_epochs(job.n_examples)
    if hp["batch_size"] == "auto":
        hp["batch_size"] = max(1, min(256, math.ceil(job.n_examples * 0.002)))
    if hp["learning_rate_multiplier"] == "auto":
        hp["learning_rate_multiplier"] = 1.8 if job.method_type == "supervised" else 1.0
    extra = job.extra_method_fields.get("hyperparameters", {})
    if extra.get("beta", None) == "auto":
        extra["beta"] = 0.1


def _phase_remaining(core: EmulatorCore, job: JobRecord) -> float:
    timing = core.config.job_timing
    if job.status == "validating_files":
        boundary = timing.validating_seconds
    elif job.status == "queued":
        boundary = timing.queued_seconds
    elif job.steps_done < job.total_steps:
        boundary = (job.steps_done + 1) * timing.step_seconds
    else:
        boundary = job.total_steps * timing.step_seconds + timing.finalizing_seconds
    return max(0.0, boundary - job.phase_elapsed)


def advance(core: EmulatorCore, job: JobRecord, now: float) -> None:
    """Apply emulated time up to `now`, emitting what happened at the moment it happened."""
    if job.terminal or job.status == "paused":
        job.cursor = max(job.cursor, now)
        return
    while job.status in ("validating_files", "queued", "running"):
        need = _phase_remaining(core, job)
        available = now - job.cursor
        if need > available:
            job.phase_elapsed += max(0.0, available)
            job.cursor = max(job.cursor, now)
            break
        job.cursor += need
        job.phase_elapsed += need
        _on_boundary(core, job, job.cursor)
    _update_estimate(core, job)


def _update_estimate(core: EmulatorCore, job: JobRecord) -> None:
    if job.status != "running":
        job.estimated_finish = None
        return
    timing = core.config.job_timing
    total = job.total_steps * timing.step_seconds + timing.finalizing_seconds
    job.estimated_finish = math.ceil(job.cursor + max(0.0, total - job.phase_elapsed))


def _on_boundary(core: EmulatorCore, job: JobRecord, at: float) -> None:
    if job.status == "validating_files":
        _finish_validation(core, job, at)
    elif job.status == "queued":
        _start_running(core, job, at)
    elif job.steps_done < job.total_steps:
        _train_step(core, job, at)
    else:
        _succeed(core, job, at)


def _check_file(core: EmulatorCore, job: JobRecord, file_id: str, param: str) -> training_data.TrainingData | JobError:
    record: FileRecord | None = core.store.files.get(file_id)
    if record is None:
        return JobError(code=f"invalid_{param}", message=f"File {file_id} no longer exists.", param=param)
    return training_data.check(
        record.content,
        param=param,
        method=job.method_type,
        base_model=job.base.id,
        encoding=job.base.encoding,
        min_examples=core.config.min_training_examples if param == "training_file" else 1,
    )


def _finish_validation(core: EmulatorCore, job: JobRecord, at: float) -> None:
    result = _check_file(core, job, job.training_file, "training_file")
    if isinstance(result, JobError):
        fail(core, job, result, at)
        return
    if job.validation_file is not None:
        checked = _check_file(core, job, job.validation_file, "validation_file")
        if isinstance(checked, JobError):
            fail(core, job, checked, at)
            return
    job.n_examples = result.n_examples
    job.tokens_per_epoch = result.tokens_per_epoch
    job.status = "queued"
    job.phase_elapsed = 0.0
    _event(core, job, at, "Files validated, moving job to queued state")


def _start_running(core: EmulatorCore, job: JobRecord, at: float) -> None:
    _resolve_hyperparameters(job)
    job.n_epochs = int(job.hyperparameters["n_epochs"])
    job.steps_per_epoch = math.ceil(job.n_examples / int(job.hyperparameters["batch_size"]))
    job.total_steps = job.steps_per_epoch * job.n_epochs
    if job.fail_fraction is not None:
        job.fail_at_step = min(job.total_steps, max(1, math.ceil(job.fail_fraction * job.total_steps)))
    job.status = "running"
    job.phase_elapsed = 0.0
    _event(core, job, at, "Fine-tuning job started")


def _train_step(core: EmulatorCore, job: JobRecord, at: float) -> None:
    job.steps_done += 1
    step = job.steps_done
    data = metrics.step_metrics(job.seed, step, job.total_steps, with_validation=job.has_validation)
    job.metrics_rows.append(data)
    _event(
        core,
        job,
        at,
        f"Step {step}/{job.total_steps}: training loss={data['train_loss']:.4f}",
        type="metrics",
        data=data,
    )
    if job.fail_at_step is not None and step >= job.fail_at_step and job.fail_error is not None:
        fail(core, job, job.fail_error, at)
        return
    epoch, boundary = divmod(step, job.steps_per_epoch)
    if boundary == 0 and epoch > job.n_epochs - CHECKPOINT_EPOCHS:
        _checkpoint(core, job, at, step, data)
    if step == job.total_steps:
        _event(core, job, at, "Evaluating model against our usage policies")


def _model_name(core: EmulatorCore, job: JobRecord) -> str:
    if core.config.azure is not None:
        return f"{job.base.id}.ft-{hashlib.sha256(job.id.encode()).hexdigest()[:32]}"
    return f"ft:{job.base.id}:{core.config.organization_name}:{job.suffix or ''}:{job.model_tag}"


def _checkpoint(core: EmulatorCore, job: JobRecord, at: float, step: int, data: dict[str, Any]) -> None:
    checkpoint_metrics = {k: v for k, v in data.items() if k != "total_steps"}
    if job.has_validation:
        checkpoint_metrics.update(metrics.full_validation(job.seed, step, job.total_steps))
    name = f"{_model_name(core, job)}:ckpt-step-{step}"
    job.checkpoints.append(
        CheckpointRecord(
            id=core.ids.new("checkpoint"),
            created_at=int(at),
            fine_tuned_model_checkpoint=name,
            fine_tuning_job_id=job.id,
            step_number=step,
            metrics=checkpoint_metrics,
        )
    )
    core.store.fine_tuned_models[name] = FineTunedModel(
        id=name, created=int(at), owned_by=core.config.organization_id, base=job.base, job_id=job.id, checkpoint=True
    )
    _event(core, job, at, f"Checkpoint created at step {step} with Snapshot ID: {name}")


def _succeed(core: EmulatorCore, job: JobRecord, at: float) -> None:
    name = _model_name(core, job)
    results = FileRecord(
        id=core.ids.new("file"),
        filename="step_metrics.csv",
        purpose="fine-tune-results",
        content=metrics.results_csv_base64(job.metrics_rows),
        created_at=int(at),
    )
    core.store.files[results.id] = results
    if job.odd != "succeeded_without_model":
        core.store.fine_tuned_models[name] = FineTunedModel(
            id=name, created=int(at), owned_by=core.config.organization_id, base=job.base, job_id=job.id
        )
        job.fine_tuned_model = name
    job.trained_tokens = job.tokens_per_epoch * job.n_epochs
    if job.odd == "negative_trained_tokens":
        job.trained_tokens = -job.trained_tokens
    job.result_files = [results.id]
    job.status = "succeeded"
    job.finished_at = int(at)
    _event(core, job, at, f"New fine-tuned model created: {name}")
    _event(core, job, at, "Usage policy evaluations completed, model is now enabled for sampling")
    _event(core, job, at, "The job has successfully completed")
    core.webhooks.emit("fine_tuning.job.succeeded", job.id, int(at))


def fail(core: EmulatorCore, job: JobRecord, error: JobError, at: float) -> None:
    job.status = "failed"
    job.error = None if job.odd == "failed_without_error" else error
    job.finished_at = int(at)
    job.estimated_finish = None
    _event(core, job, at, error.message, level="error")
    _event(core, job, at, "The job failed", level="error")
    core.webhooks.emit("fine_tuning.job.failed", job.id, int(at))


def cancel(core: EmulatorCore, job: JobRecord) -> None:
    if job.terminal:
        raise invalid(f"Job {job.id} is already {job.status} and cannot be cancelled.", param="fine_tuning_job_id")
    at = core.clock.now()
    job.status = "cancelled"
    job.finished_at = int(at)
    job.estimated_finish = None
    _event(core, job, at, "Job was cancelled")
    core.webhooks.emit("fine_tuning.job.cancelled", job.id, int(at))


def pause(core: EmulatorCore, job: JobRecord) -> None:
    if job.status != "running":
        raise invalid(f"Job {job.id} is {job.status}; only running jobs can be paused.", param="fine_tuning_job_id")
    job.status = "paused"
    job.estimated_finish = None
    _event(core, job, core.clock.now(), "Fine-tuning job paused")


def resume(core: EmulatorCore, job: JobRecord) -> None:
    if job.status != "paused":
        raise invalid(f"Job {job.id} is {job.status}; only paused jobs can be resumed.", param="fine_tuning_job_id")
    job.status = "running"
    job.cursor = core.clock.now()
    _event(core, job, job.cursor, "Fine-tuning job resumed")
    _update_estimate(core, job)


def matches_metadata(job: JobRecord, wanted: dict[str, str] | None, want_null: bool) -> bool:
    if want_null:
        return not job.metadata
    return all((job.metadata or {}).get(k) == v for k, v in (wanted or {}).items())
