from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class DatasetStatus(StrEnum):
    validating = "validating"
    ready = "ready"
    invalid = "invalid"


class DatasetOut(BaseModel):
    object: str = "dataset"
    id: str
    project_id: str
    filename: str
    status: DatasetStatus
    format: str | None = Field(default=None, description="Detected or declared format.")
    declared_format: str | None = None
    sha256: str
    size_bytes: int
    n_examples: int | None = None
    model: str | None = Field(default=None, description="Base model the cost estimate is for.")
    source_dataset_id: str | None = None
    derivation: dict[str, Any] | None = Field(default=None, description="How a derived dataset was made.")
    summary: dict[str, Any] | None = Field(default=None, description="Counts of errors and warnings, tokens, cost.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
