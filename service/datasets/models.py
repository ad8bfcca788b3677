from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import Timestamps, WorkItem, json_field


class Dataset(Timestamps, WorkItem, SQLModel, table=True):
    """An uploaded or derived dataset. The file itself is content-addressed under ``files/`` by its sha256."""

    __tablename__ = "datasets"
    __table_args__ = (sa.UniqueConstraint("project_id", "sha256", name="uq_datasets_project_sha256"),)

    id: str = Field(default_factory=lambda: new_id("dataset"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    filename: str = Field(max_length=500)
    status: str = Field(max_length=32, index=True)
    declared_format: str | None = Field(default=None, max_length=32)
    format: str | None = Field(default=None, max_length=32)
    sha256: str = Field(max_length=64, index=True)
    size_bytes: int
    n_examples: int | None = None
    model: str | None = Field(default=None, max_length=200, description="Base model the report's estimate is for.")
    options: dict[str, Any] = json_field()
    report: dict[str, Any] | None = json_field(None)
    source_dataset_id: str | None = Field(default=None, foreign_key="datasets.id", max_length=40, ondelete="SET NULL")
    derivation: dict[str, Any] | None = json_field(None)
    metadata_: dict[str, Any] = json_field()
