"""Evaluation rows and their per-sample results.

A sample is unique by (evaluation, candidate, example key): a resumed run skips what is stored and never pays for an
answer twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import Timestamps, WorkItem, json_field, ts_field


class Evaluation(Timestamps, WorkItem, SQLModel, table=True):
    __tablename__ = "evaluations"

    id: str = Field(default_factory=lambda: new_id("evaluation"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    status: str = Field(max_length=32, index=True)
    dataset_id: str = Field(foreign_key="datasets.id", max_length=40)
    job_id: str | None = Field(default=None, foreign_key="jobs.id", max_length=40, ondelete="SET NULL")
    # The request as validated (EvaluationCreate), with endpoint keys replaced by ciphertexts.
    config: dict[str, Any] = json_field()
    progress: dict[str, Any] = json_field()
    summary: dict[str, Any] | None = json_field(None)
    error: dict[str, Any] | None = json_field(None)
    metadata_: dict[str, Any] = json_field()
    started_at: datetime | None = ts_field(nullable=True)
    finished_at: datetime | None = ts_field(nullable=True)
    cancel_requested_at: datetime | None = ts_field(nullable=True)
    # Evaluations that run a model on this machine (local inference) go to the ``train`` queue, whose worker uses the
    # device one task at a time, so they never share it with a training; the others run on ``default``.
    worker_queue: str = Field(default="default", max_length=16, sa_column_kwargs={"server_default": "default"})


class EvaluationSample(SQLModel, table=True):
    __tablename__ = "evaluation_samples"
    __table_args__ = (
        sa.UniqueConstraint("evaluation_id", "candidate", "example_key", name="uq_evaluation_samples_key"),
    )

    id: str = Field(default_factory=lambda: new_id("evaluation_sample"), primary_key=True, max_length=40)
    evaluation_id: str = Field(foreign_key="evaluations.id", index=True, max_length=40, ondelete="CASCADE")
    candidate: str = Field(max_length=64)
    example_key: str = Field(max_length=32, description="'<split>:<index>'")
    split: str = Field(max_length=8)
    example_index: int
    input: list[dict[str, Any]] = json_field(list)
    reference: Any = json_field(None)
    output: str | None = None
    finish_reason: str | None = Field(default=None, max_length=32)
    ok: bool
    error: str | None = None
    error_kind: str | None = Field(default=None, max_length=32)
    scores: dict[str, Any] = json_field()
    latency_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    created_at: datetime = ts_field(default_now=True)
