"""The training-provider interface. Adapters translate one provider's API into these shapes; the job runner knows
nothing else about providers.

Calls that create things at the provider are made once: the runner first asks ``find_file`` / ``find_job`` (by our
content hash and our job id) and only creates when nothing is found, so a crash between "the provider made it" and "we
recorded it" never makes a second one.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from api_schemas.jobs import JobStatus


class Capabilities(BaseModel):
    methods: list[str] = Field(default_factory=lambda: ["supervised"])
    # Which kinds of training a job may choose ("lora", "full"); empty: the provider decides and says nothing.
    training_types: list[str] = Field(default_factory=list)
    pause_resume: bool = False
    checkpoints: bool = True
    events: bool = True
    webhooks: bool = False
    needs_credentials: bool = True
    runs_locally: bool = False
    # Its fine-tunes answer only once the user deploys them (Azure): the name of the deployment is registered here.
    needs_deployment: bool = False


class ProviderJob(BaseModel):
    """A provider's view of a job, parsed leniently: unknown statuses and extra fields are kept, not fatal."""

    id: str
    raw_status: str
    status: JobStatus | None = Field(description="Our status for raw_status; None when the status is unknown.")
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    estimated_finish: datetime | None = None
    finished_at: datetime | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    result_files: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any] = Field(default_factory=dict)


class ProviderEvent(BaseModel):
    id: str
    created_at: datetime
    level: str = "info"
    type: str = "message"
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class ProviderCheckpoint(BaseModel):
    id: str
    step: int
    model: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class ProviderModel(BaseModel):
    id: str
    owned_by: str | None = None
    shutdown_date: date | None = None
    fine_tunable: bool | None = None


class ResultFile(BaseModel):
    """A finished job's per-step metrics as the provider reports them in its result file (complete, unlike events).

    ``rows`` hold one value per column (None where the cell was empty or not a number); ``step`` is always a column."""

    file_id: str
    columns: list[str]
    rows: list[list[int | float | None]]


class JobSpec(BaseModel):
    """What the runner asks a provider to create. ``our_job_id`` tags the provider job for reconciliation."""

    our_job_id: str
    model: str
    method: str
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # The name the service gives the fine-tune (OpenAI's ``ft:`` form, ``service.providers.naming``), for providers that
    # do not name their models themselves; hosted providers ignore it and report their own.
    model_name: str | None = None


class ProviderError(Exception):
    """A provider call failed. ``transient`` errors are retried (after ``retry_after`` seconds if given); others
    fail the job with the provider's message verbatim."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status_code: int | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.transient, self.status_code = message, transient, status_code
        self.code, self.param, self.retry_after = code, param, retry_after

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code or "provider_error", "message": self.message, "param": self.param}


class TrainingProvider(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    params_model: ClassVar[type[BaseModel]]

    @property
    def account(self) -> str:
        """A stable, non-secret id of the account (files are uploaded once per account)."""
        ...

    def find_file(self, *, sha256: str, purpose: str) -> str | None: ...
    def upload_file(self, path: Path, *, sha256: str, purpose: str) -> str: ...
    def find_job(self, our_job_id: str) -> ProviderJob | None: ...
    def create_job(self, spec: JobSpec) -> ProviderJob: ...
    def get_job(self, provider_job_id: str) -> ProviderJob: ...
    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]: ...
    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]: ...
    def cancel(self, provider_job_id: str) -> ProviderJob: ...
    def pause(self, provider_job_id: str) -> ProviderJob: ...
    def resume(self, provider_job_id: str) -> ProviderJob: ...
    def list_models(self) -> list[ProviderModel]: ...


@runtime_checkable
class HasResultFiles(Protocol):
    """Optional: providers that publish a result file of per-step metrics when a job succeeds."""

    def result_metrics(self, job: ProviderJob) -> list[ResultFile]: ...
