"""In-memory state. Every read and write goes through `Store.lock`, shared by the HTTP handlers, the ticker thread
and the test thread that calls `advance()`."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .config import JobError, ModelSpec

ACTIVE_JOB_STATUSES = ("validating_files", "queued", "running", "paused")
TERMINAL_JOB_STATUSES = ("succeeded", "failed", "cancelled")
TERMINAL_BATCH_STATUSES = ("completed", "failed", "expired", "cancelled")


@dataclass
class FileRecord:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int
    expires_at: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class EventRecord:
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any]
    seq: int

    def to_api(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job.event",
            "id": self.id,
            "created_at": self.created_at,
            "level": self.level,
            "message": self.message,
            "data": self.data,
            "type": self.type,
        }


@dataclass
class CheckpointRecord:
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]

    def to_api(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job.checkpoint",
            "id": self.id,
            "created_at": self.created_at,
            "fine_tuned_model_checkpoint": self.fine_tuned_model_checkpoint,
            "fine_tuning_job_id": self.fine_tuning_job_id,
            "metrics": self.metrics,
            "step_number": self.step_number,
        }


@dataclass
class JobRecord:
    id: str
    created_at: int
    model: str
    base: ModelSpec
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    integrations: list[dict[str, Any]] | None
    method_type: str
    # As requested ("auto" where not given); resolved once the job runs.
    hyperparameters: dict[str, Any]
    organization_id: str
    extra_method_fields: dict[str, Any] = field(default_factory=dict)
    status: str = "validating_files"
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    result_files: list[str] = field(default_factory=list)
    estimated_finish: int | None = None
    # Simulation: emulated time already applied, active seconds spent in the current phase, training shape.
    cursor: float = 0.0
    phase_elapsed: float = 0.0
    steps_done: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    n_epochs: int = 0
    n_examples: int = 0
    tokens_per_epoch: int = 0
    has_validation: bool = False
    # Set by an outcome rule: fail once this fraction of the steps is done.
    fail_fraction: float | None = None
    fail_at_step: int | None = None
    fail_error: JobError | None = None
    # Odd but valid answers the description allows (metadata ``emulator_odd``; see config.ODD_JOB_ANSWERS).
    odd: str | None = None
    model_tag: str = ""
    # Our status -> the name the API answers with (Azure's "pending" for "queued").
    status_names: dict[str, str] = field(default_factory=dict)
    metrics_rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    checkpoints: list[CheckpointRecord] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES

    def to_api(self) -> dict[str, Any]:
        hp = dict(self.hyperparameters)
        method_hp = dict(hp)
        method_hp.update(self.extra_method_fields.get("hyperparameters", {}))
        method: dict[str, Any] = {"type": self.method_type, self.method_type: {"hyperparameters": method_hp}}
        if "grader" in self.extra_method_fields:
            method[self.method_type]["grader"] = self.extra_method_fields["grader"]
        error: dict[str, Any] | None = None
        if self.error is not None:
            error = {"code": self.error.code, "message": self.error.message, "param": self.error.param}
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "created_at": self.created_at,
            "error": error,
            "fine_tuned_model": self.fine_tuned_model,
            "finished_at": self.finished_at,
            "hyperparameters": hp,
            "model": self.model,
            "organization_id": self.organization_id,
            "result_files": list(self.result_files),
            "seed": self.seed,
            "status": self.status_names.get(self.status, self.status),
            "trained_tokens": self.trained_tokens,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "integrations": self.integrations,
            "estimated_finish": self.estimated_finish,
            "method": method,
            "metadata": self.metadata,
            "user_provided_suffix": self.suffix,
        }


@dataclass
class FineTunedModel:
    id: str
    created: int
    owned_by: str
    base: ModelSpec
    job_id: str
    checkpoint: bool = False


@dataclass
class BatchRecord:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None
    status: str = "validating"
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    usage: dict[str, Any] | None = None
    # Simulation state.
    cursor: float = 0.0
    phase_elapsed: float = 0.0
    forced_outcome: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    output_lines: list[dict[str, Any]] = field(default_factory=list)
    error_lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_BATCH_STATUSES

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "usage": self.usage,
            "metadata": self.metadata,
        }


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.files: dict[str, FileRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.fine_tuned_models: dict[str, FineTunedModel] = {}
        # Azure: deployment name -> the model it serves (made on the control plane, ``emu.deploy``).
        self.deployments: dict[str, str] = {}
        # Requests per route template ("POST /v1/fine_tuning/jobs"), whether they succeeded or not.
        self.calls: Counter[str] = Counter()
        self.event_seq = 0

    def clear(self) -> None:
        with self.lock:
            self.files.clear()
            self.jobs.clear()
            self.batches.clear()
            self.fine_tuned_models.clear()
            self.deployments.clear()
            self.calls.clear()
            self.event_seq = 0

    def next_seq(self) -> int:
        self.event_seq += 1
        return self.event_seq
