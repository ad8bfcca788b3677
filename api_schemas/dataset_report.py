"""The dataset validation report: located issues with stable rule codes, statistics, token totals and a cost estimate.

A report stays small whatever the file: at most ``max_issues_per_code`` issues of each code are listed, but every
issue is counted in ``issue_counts``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class DatasetFormat(StrEnum):
    chat = "chat"
    preference = "preference"
    prompt_completion = "prompt_completion"
    csv = "csv"


class Severity(StrEnum):
    error = "error"
    warning = "warning"


class RuleDoc(BaseModel):
    """One validation rule, as listed by the API."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="Stable snake_case code.")
    severity: Severity
    title: str
    doc: str = Field(description="What the rule checks, why it matters and how to fix it.")
    formats: list[DatasetFormat] = Field(description="Formats the rule applies to.")


class ValidationIssue(BaseModel):
    code: str = Field(description="Stable rule code, e.g. invalid_json.")
    severity: Severity
    message: str
    line: int | None = Field(default=None, ge=1, description="1-based line (for CSV: the row's first line).")
    field: str | None = Field(default=None, description='JSON-path-like location, e.g. "messages[2].content".')
    example: str | None = Field(default=None, description="Short excerpt of the offending value.")


class IssueCount(BaseModel):
    code: str
    severity: Severity
    count: int = Field(ge=0, description="Every occurrence in the file.")
    listed: int = Field(ge=0, description="How many of them are in ``issues``.")


class Distribution(BaseModel):
    """Exact summary of a set of integers."""

    count: int = 0
    total: int = 0
    min: int | None = None
    max: int | None = None
    mean: float | None = None
    p50: int | None = None
    p95: int | None = None


class EncodingTotals(BaseModel):
    encoding: str
    total_tokens: int = Field(description="Sum of per-example tokens (cookbook formula).")
    max_example_tokens: int | None = None
    examples_over_limit: int | None = Field(default=None, description="Against the chosen model's example limit.")


class DatasetStatistics(BaseModel):
    lines: int = Field(description="Lines in the file (CSV: physical lines).")
    examples: int = Field(description="Examples parsed (valid or not) and counted below.")
    blank_lines: int = 0
    messages: int = 0
    messages_per_example: Distribution = Field(default_factory=Distribution)
    tokens_per_role: dict[str, Distribution] = Field(
        default_factory=dict,
        description="Tokens per message by role (3 + tokens of each value, +1 for a name), in the primary encoding; "
        "'tools' is the tool definitions of an example.",
    )
    tokens_per_example: Distribution = Field(default_factory=Distribution)
    encoding: str = Field(description="Primary encoding: the chosen model's, else o200k_base.")
    token_limit: int | None = Field(default=None, description="Per-example training limit used.")
    examples_over_limit: int = 0
    examples_missing_system: int = 0
    examples_missing_user: int = 0
    tokens_by_encoding: dict[str, EncodingTotals] = Field(default_factory=dict)


class CostEstimate(BaseModel):
    model: str
    base_model: str = Field(description="The price table entry the model resolved to.")
    encoding: str
    method: str = "supervised"
    n_examples: int
    n_epochs_auto: int = Field(description='Epochs n_epochs="auto" picks for this many examples.')
    n_epochs: int = Field(description="Epochs the estimate is for (auto unless asked otherwise).")
    token_limit: int | None
    billable_tokens: int = Field(description="n_epochs * sum(min(limit, tokens per example)).")
    usd_per_1m_tokens: str
    estimated_cost_usd: str = Field(description="Decimal string, USD.")
    price_table_version: str


class NearDuplicate(BaseModel):
    line_a: int
    line_b: int
    similarity: float = Field(description="Estimated Jaccard similarity.")


class DuplicatesSection(BaseModel):
    checked: bool = Field(description="False when duplicate detection was switched off.")
    exact_groups: int = 0
    exact_examples: int = Field(default=0, description="Examples that repeat an earlier one (group size - 1 summed).")
    near_pairs: int = 0
    exact: list[list[int]] = Field(default_factory=list, description="Line groups, bounded.")
    near: list[NearDuplicate] = Field(default_factory=list, description="Bounded.")


class DatasetReport(BaseModel):
    object: str = "dataset.report"
    valid: bool = Field(description="True when there are no errors (warnings allowed).")
    format: DatasetFormat | None = None
    format_detected: bool = Field(default=True, description="False when the format was declared.")
    model: str | None = None
    encoding: str
    size_bytes: int
    error_count: int
    warning_count: int
    issue_counts: list[IssueCount] = Field(default_factory=list)
    issues: list[ValidationIssue] = Field(default_factory=list, description="Sorted by line; bounded per code.")
    max_issues_per_code: int
    statistics: DatasetStatistics
    cost: CostEstimate | None = None
    duplicates: DuplicatesSection
    rules_version: str
    duration_s: float
