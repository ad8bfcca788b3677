"""Evaluations: a held-out set run through candidates (fine-tuned models, checkpoints, base models, few-shot prompts,
any OpenAI-compatible endpoint), graded by the service, with intervals and paired comparisons."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from api_schemas.common import RequestModel
from api_schemas.graders import ExactMatchGraderSpec, GraderComparison, GraderSpec, GraderSummary, Score
from api_schemas.reviews import ReviewSummary
from api_schemas.work import LastError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

# Chat-completion parameters the service sets itself (or that would break one answer per request): a candidate's
# ``params`` cannot set them.
RESERVED_PARAMS = frozenset(
    {"model", "messages", "stream", "n", "extra_headers", "extra_query", "extra_body", "timeout"}
)


class EvaluationStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class EvaluationMode(StrEnum):
    realtime = "realtime"
    batch = "batch"


class FewShot(RequestModel):
    """Put ``k`` examples of a training set before each prompt as earlier turns of the conversation."""

    dataset_id: str = Field(description="A ready chat dataset, usually the training split.")
    k: int = Field(default=3, ge=1, le=32)
    seed: int = Field(default=0, ge=0, le=2147483647, description="Which examples are drawn (same seed, same prompt).")


class _CandidateBase(RequestModel):
    name: str = Field(pattern=NAME_PATTERN, description="Unique within the evaluation; used in samples and results.")
    few_shot: FewShot | None = None
    params: dict[str, Any] = Field(
        default_factory=dict, description="Sampling parameters for this candidate only, over the evaluation's."
    )

    @field_validator("params")
    @classmethod
    def _not_the_request_itself(cls, v: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(v.keys() & RESERVED_PARAMS)
        if reserved:
            raise ValueError(f"params cannot set {', '.join(reserved)} (the service sets them)")
        return v


class JobCandidate(_CandidateBase):
    """The model a fine-tuning job produced (or one of its checkpoints), run where the job ran: OpenAI models through
    the project's OpenAI credentials, local jobs by local inference with their LoRA adapter."""

    kind: Literal["job"] = "job"
    job_id: str
    checkpoint_step: int | None = Field(default=None, ge=0, description="A checkpoint instead of the final model.")


class ModelCandidate(_CandidateBase):
    """A model by name on a provider: base models (the baseline) or fine-tuned models made elsewhere."""

    kind: Literal["model"] = "model"
    provider: Literal["openai", "local", "together", "azure"] = "openai"
    model: str = Field(min_length=1, max_length=256)


class EndpointCandidate(_CandidateBase):
    """Any OpenAI-compatible chat completions server (Together, Fireworks, vLLM, Ollama, llama.cpp, a gateway)."""

    kind: Literal["endpoint"] = "endpoint"
    base_url: str = Field(min_length=1, max_length=2000, description="e.g. https://api.together.xyz/v1")
    model: str = Field(min_length=1, max_length=256)
    api_key: SecretStr | None = Field(default=None, description="Stored encrypted; never returned.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        return v.rstrip("/")


CandidateSpec = Annotated[JobCandidate | ModelCandidate | EndpointCandidate, Field(discriminator="kind")]


class Sampling(RequestModel):
    temperature: float = Field(default=0.0, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int = Field(default=256, ge=1, le=32768)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(default=0, ge=0, le=2147483647)
    stop: list[str] | None = Field(default=None, max_length=4)


class Limits(RequestModel):
    max_concurrency: int = Field(default=16, ge=1, le=512, description="Requests in flight per candidate, at most.")
    requests_per_minute: float | None = Field(default=None, gt=0, le=1_000_000, allow_inf_nan=False)
    tokens_per_minute: float | None = Field(default=None, gt=0, le=10_000_000_000, allow_inf_nan=False)


class JudgeEndpoint(RequestModel):
    """Where LLM-judge graders send their prompts (the judge model is named in the grader)."""

    base_url: str | None = Field(
        default=None, max_length=2000, description="None: OpenAI with the project's credentials."
    )
    api_key: SecretStr | None = Field(default=None, description="Stored encrypted; never returned.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return None if v is None else EndpointCandidate._http_url(v)


class OverfitCheck(RequestModel):
    """Grade the candidates on a sample of the training set too: a large train-test gap means memorisation."""

    dataset_id: str
    size: int = Field(default=100, ge=1, le=10000)
    seed: int = Field(default=0, ge=0, le=2147483647)


class EvaluationCreate(RequestModel):
    dataset_id: str = Field(
        description="The held-out set: a ready chat or prompt/completion dataset (e.g. a test split)."
    )
    candidates: list[CandidateSpec] = Field(min_length=1, max_length=16)
    graders: list[GraderSpec] = Field(
        default_factory=lambda: [ExactMatchGraderSpec(name="exact_match")],
        min_length=1,
        max_length=16,
    )
    baseline: str | None = Field(
        default=None, description="The candidate the others are compared with; default: the first candidate."
    )
    sampling: Sampling = Field(default_factory=Sampling)
    limits: Limits = Field(default_factory=Limits)
    mode: EvaluationMode = Field(
        default=EvaluationMode.realtime,
        strict=False,
        description="batch: remote candidates go through the provider's Batch API (about half the price, slower).",
    )
    max_examples: int | None = Field(default=None, ge=1, le=1_000_000, description="Use a seeded sample of the set.")
    seed: int = Field(default=0, ge=0, le=2147483647, description="Seed of the example sample and the bootstrap.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, allow_inf_nan=False)
    judge: JudgeEndpoint | None = None
    overfit_check: OverfitCheck | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _names(self) -> EvaluationCreate:
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidate names must be unique: {', '.join(dupes)}")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the candidates")
        graders = [g.name for g in self.graders]
        gdupes = sorted({n for n in graders if graders.count(n) > 1})
        if gdupes:
            raise ValueError(f"grader names must be unique: {', '.join(gdupes)}")
        return self


class JobEvaluationRequest(RequestModel):
    """An evaluation to start when a job succeeds: the fine-tuned model against its base model (and optionally a
    few-shot prompt of the base model built from the job's training set)."""

    dataset_id: str
    graders: list[GraderSpec] = Field(
        default_factory=lambda: [ExactMatchGraderSpec(name="exact_match")],
        min_length=1,
        max_length=16,
    )
    include_base: bool = Field(default=True, description="Compare with the base model.")
    few_shot_k: int | None = Field(default=None, ge=1, le=32, description="Also a k-shot prompt of the base model.")
    sampling: Sampling = Field(default_factory=Sampling)
    limits: Limits = Field(default_factory=Limits)
    mode: EvaluationMode = Field(default=EvaluationMode.realtime, strict=False)
    max_examples: int | None = Field(default=None, ge=1, le=1_000_000)
    judge: JudgeEndpoint | None = None


class CandidateProgress(BaseModel):
    total: int = 0
    done: int = 0
    failed: int = 0
    phase: str = Field(
        default="pending", description="pending, generating, batch_submitted, done, skipped, cancelled"
    )
    batch_cancel: str | None = Field(
        default=None,
        description="Batch mode, after a cancel: which provider batches were cancelled there, or why the provider "
        "did not cancel one (it may still run and bill).",
    )


class Progress(BaseModel):
    examples: int = 0
    train_examples: int = 0
    candidates: dict[str, CandidateProgress] = Field(default_factory=dict)


class CandidateResult(BaseModel):
    candidate: str
    model: str | None = Field(default=None, description="The model that answered.")
    n: int
    n_failed: int = Field(description="Samples whose generation failed after retries (graded as wrong).")
    status: Literal["complete", "partial", "failed"] = Field(
        default="complete",
        description="complete: every sample was answered; partial: some generations failed; failed: none was "
        "answered, so its metrics grade only empty answers.",
    )
    graders: dict[str, GraderSummary]
    input_tokens: int
    output_tokens: int
    cost_usd: str | None = Field(default=None, description="From token usage and the price table; None if unpriced.")
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    train_graders: dict[str, GraderSummary] | None = Field(
        default=None, description="The overfitting check: the same graders on a sample of the training set."
    )


class CandidateComparison(BaseModel):
    baseline: str
    candidate: str
    graders: dict[str, GraderComparison] = Field(description="candidate - baseline, paired by example.")


class EvaluationResults(BaseModel):
    candidates: list[CandidateResult]
    comparisons: list[CandidateComparison]
    pairwise: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="LLM pairwise graders: candidate -> verdict counts against the baseline."
    )


class EvaluationError(BaseModel):
    code: str
    message: str
    candidate: str | None = None


class EvaluationOut(BaseModel):
    object: str = "evaluation"
    id: str
    project_id: str
    status: EvaluationStatus
    dataset_id: str
    job_id: str | None = None
    mode: EvaluationMode
    candidates: list[dict[str, Any]] = Field(description="As requested, secrets removed.")
    graders: list[dict[str, Any]]
    baseline: str
    sampling: Sampling
    limits: Limits
    max_examples: int | None = None
    seed: int
    confidence: float
    overfit_check: OverfitCheck | None = None
    progress: Progress
    results: EvaluationResults | None = None
    error: EvaluationError | None = None
    last_error: LastError | None = Field(
        default=None, description="The last error the run met (retried until the bound, then the evaluation fails)."
    )
    attempts: int = Field(default=0, description="Failed runs in a row (0: the last one went well).")
    cancel_requested: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    reviews: list[ReviewSummary] | None = Field(
        default=None,
        description="Human review queues of this evaluation with their figures (POST .../review); given by GET of "
        "one evaluation, null in lists and events.",
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class SampleOut(BaseModel):
    object: str = "evaluation.sample"
    id: str
    evaluation_id: str
    candidate: str
    split: Literal["test", "train"]
    example_index: int
    input: list[dict[str, Any]] = Field(description="The prompt messages as sent (few-shot turns excluded).")
    reference: Any = None
    output: str | None = None
    finish_reason: str | None = None
    ok: bool
    error: str | None = None
    error_kind: str | None = None
    scores: dict[str, Score] = Field(default_factory=dict)
    latency_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    created_at: datetime
