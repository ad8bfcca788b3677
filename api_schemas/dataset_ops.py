"""Requests for operations that derive datasets from others (splits, conversions) or compare them (leakage)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api_schemas.common import RequestModel
from api_schemas.datasets import DatasetOut


class SplitRequest(RequestModel):
    fractions: dict[Literal["train", "validation", "test"], float] = Field(
        description="Share of examples per split; must sum to 1.",
        examples=[{"train": 0.8, "validation": 0.1, "test": 0.1}],
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Same input and seed give byte-identical splits.")
    stratify_by: str | None = Field(
        default=None, description="Field path of a label (e.g. metadata.label), or 'assistant' for the last answer."
    )


class SplitResponse(BaseModel):
    source_dataset_id: str
    splits: dict[str, DatasetOut]


class ConvertRequest(RequestModel):
    to: Literal["chat"] = "chat"
    template: dict[str, Any] | None = Field(
        default=None,
        description="prompt_completion sources: {system, prompt_separator, completion_stop, strip_leading_space, "
        "strip_whitespace}; 'auto' separators are removed only when every row has them.",
    )
    csv_columns: dict[str, Any] | None = Field(
        default=None, description="CSV sources: {user, assistant, system | system_text} column names or indexes."
    )
    delimiter: str | None = Field(default=None, max_length=1, description="CSV delimiter; sniffed when absent.")


class ConvertResponse(BaseModel):
    dataset: DatasetOut
    conversion: dict[str, Any] | None = Field(
        default=None,
        description="Rows read, examples written, skipped rows with their problems. Null while the worker converts "
        "a large source (202): it then appears in the dataset's `derivation.summary`.",
    )


class LeakageRequest(RequestModel):
    train_dataset_id: str
    test_dataset_id: str
    threshold: float = Field(default=0.85, gt=0, le=1, description="Jaccard similarity counted as a near duplicate.")
