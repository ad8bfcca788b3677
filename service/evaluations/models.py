from __future__ import annotations

from typing import Any

from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import Timestamps, WorkItem, json_field


class Evaluation(Timestamps, WorkItem, SQLModel, table=True):
    __tablename__ = "evaluations"

    id: str = Field(default_factory=lambda: new_id("evaluation"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    status: str = Field(max_length=32, index=True)
    dataset_id: str = Field(foreign_key="datasets.id", max_length=40)
    job_id: str | None = Field(default=None, foreign_key="jobs.id", max_length=40, ondelete="SET NULL")
    config: dict[str, Any] = json_field()
    progress: dict[str, Any] = json_field()
    summary: dict[str, Any] | None = json_field(None)
    error: dict[str, Any] | None = json_field(None)
    metadata_: dict[str, Any] = json_field()
