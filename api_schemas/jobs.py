from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from api_schemas.common import RequestModel
from api_schemas.evaluations import JobEvaluationRequest
from api_schemas.work import LastError


class JobStatus(StrEnum):
    created = "created"
    uploading = "uploading"
    submitted = "submitted"
    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class MethodType(StrEnum):
    supervised = "supervised"
    dpo = "dpo"


class JobMethod(RequestModel):
    type: MethodType = Field(default=MethodType.supervised, strict=False)
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Checked against the provider's parameter schema (GET /v1/providers)."
    )


# OpenAI documents at most 16 metadata pairs on a job (keys up to 64 characters, values up to 512). The service tags
# every provider job with one pair of its own, ``RESERVED_METADATA_KEY`` = our job id: that is how a retry finds the
# job a provider created before a crash instead of creating a second one. So a user gives at most 15 pairs, on every
# provider alike, so that a recipe accepted by one provider is accepted by the others unchanged.
PROVIDER_METADATA_PAIRS = 16
RESERVED_METADATA_KEY = "finetune_job_id"
USER_METADATA_PAIRS = PROVIDER_METADATA_PAIRS - 1


def check_job_metadata(v: dict[str, str]) -> dict[str, str]:
    """The metadata rule of a job (``JobCreate`` and the OpenAI-shaped ``POST /v1/fine_tuning/jobs``)."""
    if len(v) > USER_METADATA_PAIRS:
        raise ValueError(
            f"at most {USER_METADATA_PAIRS} metadata pairs ({len(v)} given): providers accept "
            f"{PROVIDER_METADATA_PAIRS} and the service adds its own {RESERVED_METADATA_KEY!r} to every job"
        )
    if RESERVED_METADATA_KEY in v:
        raise ValueError(f"metadata key {RESERVED_METADATA_KEY!r} is reserved: the service tags every job with it")
    for key, value in v.items():
        if len(key) > 64 or len(value) > 512:
            raise ValueError(f"metadata {key!r}: keys up to 64 characters, values up to 512")
    return v


class JobCreate(RequestModel):
    training_dataset_id: str
    validation_dataset_id: str | None = None
    provider: str | None = Field(default=None, description="Provider name; default: the server's default provider.")
    model: str = Field(min_length=1, max_length=200, description="Base model to fine-tune.")
    method: JobMethod = Field(default_factory=JobMethod)
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2147483647)
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description=f"At most {USER_METADATA_PAIRS} pairs (keys up to 64 characters, values up to 512): providers "
        f"accept {PROVIDER_METADATA_PAIRS} and the service adds {RESERVED_METADATA_KEY!r} to find the job again.",
    )
    max_cost_usd: Decimal | None = Field(
        default=None,
        gt=0,
        le=10**9,
        allow_inf_nan=False,
        strict=False,
        description="Refuse the job if the estimate is above (a decimal string or a number).",
    )
    evaluation: JobEvaluationRequest | None = Field(
        default=None,
        description="Evaluate the fine-tuned model against its base model when the job succeeds "
        "(the evaluation's id appears as evaluation_id).",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, v: dict[str, str]) -> dict[str, str]:
        return check_job_metadata(v)


class JobError(BaseModel):
    code: str | None = None
    message: str
    param: str | None = None


class ProviderAnomaly(BaseModel):
    """A provider answer the published description allows but that makes no sense for the job: kept here, not stored
    as a fact, and never used to compute anything (e.g. a cost)."""

    code: str = Field(description="negative_trained_tokens, succeeded_without_model, failed_without_error")
    field: str = Field(description="The provider job's field that holds the odd value.")
    message: str
    value: Any = Field(default=None, description="The value as the provider gave it.")


class JobOut(BaseModel):
    object: str = "fine_tuning.job"
    id: str
    project_id: str
    provider: str
    model: str
    method: JobMethod
    training_dataset_id: str
    validation_dataset_id: str | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus
    status_reason: str | None = None
    provider_status: str | None = Field(default=None, description="The provider's own status, verbatim.")
    provider_job_id: str | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    estimated_cost_usd: str | None = None
    actual_cost_usd: str | None = None
    max_cost_usd: str | None = None
    price_table_version: str | None = None
    error: JobError | None = None
    last_error: LastError | None = Field(
        default=None, description="The last error a step of this job met, e.g. a provider answering 503 (retried)."
    )
    attempts: int = Field(default=0, description="Failed attempts in a row of the current step (0: it went well).")
    warnings: list[dict[str, Any]] = Field(default_factory=list)
    provider_anomalies: list[ProviderAnomaly] = Field(
        default_factory=list,
        description="Values the provider gave that its description allows but that make no sense for this job "
        "(a success without a model, a failure without an error, negative token counts).",
    )
    requested_action: str | None = None
    rerun_of_job_id: str | None = None
    evaluation_id: str | None = None
    estimated_finish_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobEventOut(BaseModel):
    object: str = "fine_tuning.job.event"
    id: str
    job_id: str
    source: str
    type: str
    level: str
    message: str
    data: dict[str, Any]
    created_at: datetime


class CheckpointOut(BaseModel):
    object: str = "fine_tuning.job.checkpoint"
    id: str
    job_id: str
    step: int
    model: str | None = None
    metrics: dict[str, Any]
    created_at: datetime


class JobMetricsSteps(BaseModel):
    events: int = Field(description="Steps that had a metrics event.")
    result_file: int = Field(description="Steps in the provider's result file (0 until the job succeeded).")


class JobMetricsOut(BaseModel):
    """The training curve. While the job runs it comes from the provider's metrics events (which may skip steps);
    once it succeeded, the provider's result file completes it and wins where both have a value."""

    object: str = "fine_tuning.job.metrics"
    job_id: str
    points: list[dict[str, Any]] = Field(
        description="One per step, sorted: step, train_loss, train_mean_token_accuracy, valid_loss, "
        "valid_mean_token_accuracy and any other numeric column the provider reports."
    )
    steps: JobMetricsSteps
    complete: bool = Field(description="True once the result file has been merged.")


class JobRerun(RequestModel):
    """Run the same recipe (datasets, method, hyperparameters, seed) again, on another provider or base model."""

    provider: str | None = Field(default=None, description="Default: the original job's provider.")
    model: str | None = Field(default=None, description="Default: the original job's base model.")
    hyperparameters: dict[str, Any] | None = Field(
        default=None, description="Replaces the carried-over hyperparameters (those the new provider knows)."
    )
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    max_cost_usd: Decimal | None = Field(default=None, gt=0, le=10**9, allow_inf_nan=False, strict=False)
