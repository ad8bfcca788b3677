"""Rows of the distillation domain: a dataset distillation (``dsr_``) and a distillation recipe (``dist_``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import Timestamps, WorkItem, json_field, ts_field


class DistillRun(Timestamps, WorkItem, SQLModel, table=True):
    """A teacher answering a dataset's prompts. Its answers are generated as an evaluation of the teacher (one pass
    per start or resume, ``evaluation_ids``), so they are rate limited, resumable by key, batchable and measured like
    any evaluation; when the pass ends the dataset is built from what it holds."""

    __tablename__ = "distill_runs"

    id: str = Field(default_factory=lambda: new_id("distill_run"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    status: str = Field(max_length=32, index=True)
    source_dataset_id: str = Field(foreign_key="datasets.id", max_length=40)
    # The request as validated (DistillDatasetCreate), with the teacher's and judge's keys as ciphertexts.
    config: dict[str, Any] = json_field()
    evaluation_id: str | None = Field(default=None, foreign_key="evaluations.id", max_length=40, ondelete="SET NULL")
    evaluation_ids: list[str] = json_field(list)
    dataset_id: str | None = Field(default=None, foreign_key="datasets.id", max_length=40, ondelete="SET NULL")
    counts: dict[str, Any] = json_field()
    usage: dict[str, Any] = json_field()
    error: dict[str, Any] | None = json_field(None)
    metadata_: dict[str, Any] = json_field()
    cancel_requested_at: datetime | None = ts_field(nullable=True)
    finished_at: datetime | None = ts_field(nullable=True)


class Distillation(Timestamps, WorkItem, SQLModel, table=True):
    """The recipe: distil, split, train the student, evaluate. Each step is its own object; this row holds their ids
    and advances when the current one has finished."""

    __tablename__ = "distillations"

    id: str = Field(default_factory=lambda: new_id("distillation"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    status: str = Field(max_length=32, index=True)
    source_dataset_id: str = Field(foreign_key="datasets.id", max_length=40)
    config: dict[str, Any] = json_field()
    distill_run_id: str | None = Field(default=None, foreign_key="distill_runs.id", max_length=40)
    train_dataset_id: str | None = Field(default=None, foreign_key="datasets.id", max_length=40, ondelete="SET NULL")
    test_dataset_id: str | None = Field(default=None, foreign_key="datasets.id", max_length=40, ondelete="SET NULL")
    job_id: str | None = Field(default=None, foreign_key="jobs.id", max_length=40, ondelete="SET NULL")
    evaluation_id: str | None = Field(default=None, foreign_key="evaluations.id", max_length=40, ondelete="SET NULL")
    report: dict[str, Any] | None = json_field(None)
    error: dict[str, Any] | None = json_field(None)
    metadata_: dict[str, Any] = json_field()
    cancel_requested_at: datetime | None = ts_field(nullable=True)
    finished_at: datetime | None = ts_field(nullable=True)
