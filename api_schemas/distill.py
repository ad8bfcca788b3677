"""Distillation: a teacher model answers a dataset's prompts and its answers become a new chat dataset
(``POST /v1/datasets/distill``); the recipe (``POST /v1/distillations``) goes on to split it, train a student on it and
evaluate the student against the teacher and against its own base model."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from api_schemas.common import RequestModel
from api_schemas.evaluations import CandidateSpec, EvaluationMode, JudgeEndpoint, Limits, Sampling
from api_schemas.graders import ExactMatchGraderSpec, GraderSpec
from api_schemas.work import LastError

MAX_ANSWERS_PER_PROMPT = 8


class DistillRunStatus(StrEnum):
    generating = "generating"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Dedupe(RequestModel):
    """Duplicate removal over the generated examples (prompt and answer together), first occurrence kept."""

    exact: bool = Field(default=True, description="Drop examples identical to an earlier one (after normalisation).")
    near: bool = Field(default=False, description="Drop examples with a MinHash near-duplicate earlier in the set.")
    near_threshold: float = Field(default=0.85, ge=0.5, le=0.99, allow_inf_nan=False)


class DistillFilters(RequestModel):
    graders: list[GraderSpec] = Field(
        default_factory=list,
        max_length=8,
        description="Every grader must pass an answer for it to be kept (an LLM judge, a JSON schema, a regex, or a "
        "reference grader against the source's own assistant turn). An answer a grader could not grade is dropped.",
    )
    dedupe: Dedupe = Field(default_factory=Dedupe)

    @field_validator("graders")
    @classmethod
    def _unique(cls, v: list[Any]) -> list[Any]:
        names = [g.name for g in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"grader names must be unique: {', '.join(dupes)}")
        return v


class DistillDatasetCreate(RequestModel):
    source_dataset_id: str = Field(
        description="The prompts: a chat dataset of prompts only (its examples may end without an assistant turn), "
        "or a ready chat, prompt/completion or preference dataset whose answers are replaced by the teacher's."
    )
    teacher: CandidateSpec = Field(
        description="Any evaluation candidate: a hosted model or fine-tune, a job's model, an OpenAI-compatible "
        "endpoint, or a local model or fine-tune (answered by local inference)."
    )
    sampling: Sampling = Field(default_factory=Sampling)
    answers_per_prompt: int = Field(
        default=1,
        ge=1,
        le=MAX_ANSWERS_PER_PROMPT,
        description="Answers asked per prompt; answer i > 0 uses seed + i. With temperature 0 they are usually the "
        "same and exact dedupe keeps one.",
    )
    filters: DistillFilters = Field(default_factory=DistillFilters)
    judge: JudgeEndpoint | None = Field(default=None, description="Where LLM-judge filters send their prompts.")
    mode: EvaluationMode = Field(
        default=EvaluationMode.realtime,
        strict=False,
        description="batch: a hosted OpenAI teacher answers through the Batch API (about half the price, slower).",
    )
    limits: Limits = Field(default_factory=Limits)
    max_prompts: int | None = Field(default=None, ge=1, le=1_000_000, description="A seeded sample of the prompts.")
    seed: int = Field(default=0, ge=0, le=2147483647, description="Seed of the prompt sample.")
    filename: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)


class DistillCounts(BaseModel):
    prompts: int = 0
    answers_requested: int = Field(default=0, description="prompts x answers_per_prompt.")
    answered: int = Field(default=0, description="Answers the teacher gave (paid for once, kept across resumes).")
    failed: int = Field(default=0, description="Requests that failed after retries (no example).")
    filtered_out: dict[str, int] = Field(default_factory=dict, description="Answers each grader filter dropped.")
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = Field(default=0, description="Examples written to the dataset.")


class DistillUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: str | None = Field(
        default=None, description="Teacher tokens at the price table's rates; None if unpriced."
    )
    price_table_version: str | None = None
    batch: bool = False


class DistillRunOut(BaseModel):
    object: str = "dataset.distillation"
    id: str
    project_id: str
    status: DistillRunStatus
    source_dataset_id: str
    teacher: dict[str, Any] = Field(description="As requested, secrets removed.")
    sampling: Sampling
    answers_per_prompt: int
    filters: dict[str, Any]
    mode: EvaluationMode
    evaluation_id: str | None = Field(
        default=None, description="The teacher's answers are generated as an evaluation (its progress, latencies)."
    )
    evaluation_ids: list[str] = Field(default_factory=list, description="Every generation pass, resumes included.")
    dataset_id: str | None = Field(default=None, description="The distilled chat dataset, once built.")
    counts: DistillCounts = Field(default_factory=DistillCounts)
    usage: DistillUsage = Field(default_factory=DistillUsage)
    error: dict[str, Any] | None = None
    last_error: LastError | None = None
    cancel_requested: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


# The recipe -------------------------------------------------------------------------------------------------------


class DistillationStatus(StrEnum):
    distilling = "distilling"
    splitting = "splitting"
    training = "training"
    evaluating = "evaluating"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Student(RequestModel):
    provider: str = Field(default="local", max_length=32, description="Where the student trains (local by default).")
    model: str = Field(min_length=1, max_length=200, description="The student's base model.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="The provider's supervised settings.")


class HeldOut(RequestModel):
    test_fraction: float = Field(default=0.2, gt=0, lt=1, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, le=2147483647)


class RecipeEvaluation(RequestModel):
    graders: list[GraderSpec] = Field(
        default_factory=lambda: [ExactMatchGraderSpec(name="exact_match")],
        min_length=1,
        max_length=8,
        description="How agreement with the teacher is measured: each grader compares an answer with the teacher's "
        "answer on the held-out prompts.",
    )
    max_examples: int | None = Field(default=None, ge=1, le=1_000_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1, allow_inf_nan=False)


class DistillationCreate(DistillDatasetCreate):
    student: Student
    held_out: HeldOut = Field(default_factory=HeldOut)
    evaluation: RecipeEvaluation = Field(default_factory=RecipeEvaluation)
    local_usd_per_hour: str | None = Field(
        default=None,
        pattern=r"^\d{1,6}(\.\d{1,6})?$",
        description="Price of this machine's time for local models' cost per 1,000 requests (a decimal string); "
        "None: local hardware counted as free.",
    )


class Step(BaseModel):
    id: str | None = None
    status: str | None = None


class Steps(BaseModel):
    distill: Step = Field(default_factory=Step, description="The dataset distillation (POST /v1/datasets/distill).")
    dataset: Step = Field(default_factory=Step, description="The distilled dataset.")
    train_split: Step = Field(default_factory=Step)
    test_split: Step = Field(default_factory=Step, description="Held-out prompts with the teacher's answers.")
    job: Step = Field(default_factory=Step, description="The student's training job.")
    evaluation: Step = Field(default_factory=Step, description="Student vs teacher vs the student's base.")


class Agreement(BaseModel):
    """How often a model's answer agrees with the teacher's on the held-out prompts, by grader, with its interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    metric: str


class PerThousand(BaseModel):
    model: str | None = None
    cost_usd: str | None = Field(default=None, description="For 1,000 requests like the held-out ones.")
    cost_note: str | None = None
    price_table_version: str | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    input_tokens: int = Field(default=0, description="Per 1,000 requests.")
    output_tokens: int = Field(default=0, description="Per 1,000 requests.")


class DistillationReport(BaseModel):
    agreement: dict[str, dict[str, Agreement]] = Field(
        description="candidate (student, base, teacher) -> grader -> agreement with the teacher's answers."
    )
    student_minus_base: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="grader -> paired difference of the student over its base, with interval."
    )
    per_1000_requests: dict[str, PerThousand] = Field(description="student and teacher (and base).")


class DistillationOut(BaseModel):
    object: str = "distillation"
    id: str
    project_id: str
    status: DistillationStatus
    source_dataset_id: str
    teacher: dict[str, Any]
    student: Student
    steps: Steps
    report: DistillationReport | None = None
    error: dict[str, Any] | None = None
    last_error: LastError | None = None
    cancel_requested: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
