from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import Timestamps, WorkItem, json_field, ts_field


class Job(Timestamps, WorkItem, SQLModel, table=True):
    __tablename__ = "jobs"

    id: str = Field(default_factory=lambda: new_id("job"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    provider: str = Field(max_length=32, index=True)
    base_model: str = Field(max_length=200)
    method: dict[str, Any] = json_field()
    training_dataset_id: str = Field(foreign_key="datasets.id", max_length=40)
    validation_dataset_id: str | None = Field(default=None, foreign_key="datasets.id", max_length=40)
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = None
    metadata_: dict[str, Any] = json_field()
    status: str = Field(max_length=32, index=True)
    status_reason: str | None = None
    provider_status: str | None = Field(default=None, max_length=64)
    provider_job_id: str | None = Field(default=None, max_length=200, index=True)
    provider_training_file_id: str | None = Field(default=None, max_length=200)
    provider_validation_file_id: str | None = Field(default=None, max_length=200)
    provider_data: dict[str, Any] | None = json_field(None)
    provider_events_cursor: str | None = Field(default=None, max_length=200)
    fine_tuned_model: str | None = Field(default=None, max_length=300)
    trained_tokens: int | None = None
    estimated_cost_usd: str | None = Field(default=None, max_length=32)
    max_cost_usd: str | None = Field(default=None, max_length=32)
    actual_cost_usd: str | None = Field(default=None, max_length=32)
    price_table_version: str | None = Field(default=None, max_length=32)
    error: dict[str, Any] | None = json_field(None)
    warnings: list[Any] = json_field(list)
    # Provider answers the description allows but that make no sense here (service.jobs.anomalies); NULL: none.
    provider_anomalies: list[Any] | None = json_field(list, nullable=True)
    requested_action: str | None = Field(default=None, max_length=16, description="cancel | pause | resume, pending")
    evaluation_request: dict[str, Any] | None = json_field(None)
    evaluation_id: str | None = Field(default=None, max_length=40)
    rerun_of_job_id: str | None = Field(default=None, foreign_key="jobs.id", max_length=40, ondelete="SET NULL")
    estimated_finish_at: datetime | None = ts_field(nullable=True)
    started_at: datetime | None = ts_field(nullable=True)
    finished_at: datetime | None = ts_field(nullable=True)
    # When the fine-tuned model was deleted (DELETE /v1/models/{model}): it leaves the model list and stops answering.
    model_deleted_at: datetime | None = ts_field(nullable=True)


class JobEvent(SQLModel, table=True):
    """What happened to a job: our transitions and the provider's own events (messages and metrics)."""

    __tablename__ = "job_events"
    __table_args__ = (sa.UniqueConstraint("job_id", "provider_event_id", name="uq_job_events_provider_event"),)

    id: str = Field(default_factory=lambda: new_id("job_event"), primary_key=True, max_length=40)
    job_id: str = Field(foreign_key="jobs.id", index=True, max_length=40, ondelete="CASCADE")
    source: str = Field(max_length=16, description="service | provider")
    type: str = Field(max_length=32, description="status | message | metrics")
    level: str = Field(default="info", max_length=16)
    message: str = Field(default="")
    data: dict[str, Any] = json_field()
    provider_event_id: str | None = Field(default=None, max_length=200)
    created_at: datetime = ts_field(default_now=True, index=True)


class JobCheckpoint(SQLModel, table=True):
    __tablename__ = "job_checkpoints"
    __table_args__ = (sa.UniqueConstraint("job_id", "step", name="uq_job_checkpoints_step"),)

    id: str = Field(default_factory=lambda: new_id("job_event"), primary_key=True, max_length=40)
    job_id: str = Field(foreign_key="jobs.id", index=True, max_length=40, ondelete="CASCADE")
    step: int
    model: str | None = Field(default=None, max_length=300, description="Model id usable for inference.")
    provider_checkpoint_id: str | None = Field(default=None, max_length=200)
    metrics: dict[str, Any] = json_field()
    path: str | None = Field(default=None, description="Local checkpoints: folder under the data directory.")
    created_at: datetime = ts_field(default_now=True)
