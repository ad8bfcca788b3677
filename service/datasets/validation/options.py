"""What a validation run can be told: limits, column mapping for CSV, and performance knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

MiB = 1024 * 1024


class CsvColumns(BaseModel):
    """Which CSV columns become which chat messages. Columns by header name, or by 0-based index without a header."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str | int | None = Field(default=None, description="Column of the user message.")
    assistant: str | int | None = Field(default=None, description="Column of the assistant message.")
    system: str | int | None = Field(default=None, description="Column of the system message, if any.")
    system_prompt: str | None = Field(
        default=None,
        validation_alias=AliasChoices("system_prompt", "system_text"),
        description="A constant system message (instead of a column); also accepted as `system_text`.",
    )
    delimiter: str | None = Field(default=None, min_length=1, max_length=1, description="Default: sniffed.")
    header: bool = Field(default=True, description="Whether the first row names the columns.")

    @model_validator(mode="after")
    def _consistent(self) -> CsvColumns:
        if self.system is not None and self.system_prompt is not None:
            raise ValueError("give either a system column or a constant system_prompt, not both")
        if not self.header:
            for role in ("user", "assistant", "system"):
                value = getattr(self, role)
                if value is not None and not isinstance(value, int):
                    raise ValueError(f"without a header, columns are 0-based indexes; {role}={value!r}")
        return self


def coerce_csv_columns(value: Any) -> CsvColumns | None:
    """A ``CsvColumns`` from ours, a mapping, or any pydantic model with the same fields (e.g. the converter's)."""
    if value is None or isinstance(value, CsvColumns):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if not isinstance(value, dict):
        raise ValueError(f"csv columns must be a mapping, got {type(value).__name__}")
    known = set(CsvColumns.model_fields) | {"system_text"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown csv column settings {unknown}; expected some of {sorted(known)}")
    return CsvColumns.model_validate(value)


class ValidationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_line_bytes: int = Field(default=8 * MiB, ge=1024, description="Longer lines are reported and skipped.")
    max_depth: int = Field(default=64, ge=2, le=1000, description="Maximum nesting of arrays/objects in a line.")
    min_examples: int = Field(default=10, ge=0)
    max_issues_per_code: int = Field(default=100, ge=0, description="Issues listed per code; all are counted.")
    example_token_limit: int | None = Field(
        default=None, gt=0, description="Per-example limit; default: the model's, else 65,536."
    )
    n_epochs: int | None = Field(default=None, ge=1, le=50, description="Epochs for the estimate; default auto.")
    count_other_encoding: bool = Field(default=True, description="Also count tokens in the other encoding.")
    duplicates: bool = Field(default=True, description="Run exact and near-duplicate detection.")
    near_duplicate_threshold: float = Field(default=0.85, gt=0, le=1)
    duplicate_memory_bytes: int = Field(
        default=32 * MiB, ge=1 * MiB, description="Memory for duplicate detection before it spills to disk."
    )
    workers: int | None = Field(default=None, ge=1, le=64, description="Processes; default: one per CPU.")
    parallel_min_bytes: int = Field(default=16 * MiB, ge=0, description="Smaller files are checked in-process.")
    chunk_bytes: int = Field(default=4 * MiB, ge=64 * 1024, description="Bytes per unit of parallel work.")
    price_table_path: Path | None = None
    workdir: Path | None = Field(default=None, description="Scratch space for duplicate detection.")
