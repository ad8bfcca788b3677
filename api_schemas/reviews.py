"""Human review of an evaluation: blind review queues, reviewers' ratings, and how far humans agree with each other and
with the evaluation's graders (LLM judges included)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from api_schemas.common import RequestModel
from api_schemas.graders import CiMethod, ConfidenceInterval

ReviewMode = Literal["pass_fail", "score", "pairwise"]
Stratify = Literal["candidate_outcome", "candidate", "reference", "none"]
Preference = Literal["A", "B", "tie"]


class ReviewQueueStatus(StrEnum):
    open = "open"
    completed = "completed"


class ReviewQueueCreate(RequestModel):
    """A queue of a stratified, seeded sample of an evaluation's answers, shown to reviewers without candidate names."""

    mode: ReviewMode = Field(
        default="pass_fail",
        description="pass_fail: each item shows one answer to pass or fail; score: one answer scored 1-5; pairwise: "
        "two candidates' answers to the same prompt, the reviewer prefers A, B or a tie.",
    )
    size: int = Field(default=50, ge=1, le=5000, description="Items to review (fewer when the evaluation has fewer).")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Fixes the sample, the order and the blinding.")
    candidates: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="Candidate names to review. Default: all of them; pairwise: exactly two (default the baseline "
        "and the first other candidate).",
    )
    stratify: Stratify | None = Field(
        default=None,
        description="Strata sampled in proportion to their size: candidate_outcome (candidate x the grader's "
        "pass/fail), candidate, reference (the example's reference label) or none. Default: candidate_outcome when a "
        "grader gives pass/fail outcomes, otherwise candidate. Pairwise: candidate_outcome is both answers' "
        "outcomes, and candidate is the same as none.",
    )
    stratify_grader: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The grader whose outcome defines the strata (default: the first one with pass/fail outcomes).",
    )
    split: Literal["test", "train"] = "test"
    reviewers_per_item: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Ratings each item needs before the queue is complete; 2 or more measures inter-reviewer "
        "agreement.",
    )
    score_pass_threshold: int = Field(
        default=4,
        ge=1,
        le=5,
        description="In score mode, the lowest human score that counts as a pass when humans are compared with "
        "graders' pass/fail outcomes.",
    )
    show_reference: bool = Field(default=True, description="Show reviewers the example's reference answer.")
    instructions: str | None = Field(default=None, max_length=16000, description="Shown to reviewers.")


class ReviewQueueProgress(BaseModel):
    n_items: int
    n_items_complete: int = Field(description="Items with reviewers_per_item ratings or more.")
    n_ratings: int = Field(description="Current ratings (one per item and reviewer).")
    reviewers: dict[str, int] = Field(description="Current ratings per reviewer.")


class ReviewQueueOut(BaseModel):
    object: str = "review_queue"
    id: str
    project_id: str
    evaluation_id: str
    status: ReviewQueueStatus
    mode: ReviewMode
    size: int
    seed: int
    candidates: list[str]
    split: str
    stratify: Stratify
    stratify_grader: str | None = None
    strata: dict[str, int] = Field(description="Items drawn per stratum (of how many available in available_strata).")
    available_strata: dict[str, int]
    reviewers_per_item: int
    score_pass_threshold: int
    show_reference: bool
    instructions: str | None = None
    progress: ReviewQueueProgress
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class ReviewResponse(BaseModel):
    label: str = Field(description="A neutral label; which candidate gave the answer is not shown.")
    output: str


class ReviewRatingCreate(RequestModel):
    """One reviewer's verdict on one item. Submitting again replaces the reviewer's current rating; the earlier one is
    kept as a revision."""

    reviewer: str = Field(
        min_length=1, max_length=100, pattern=r"^\S(.*\S)?$", description="Who rates (the name given at sign-in)."
    )
    passed: bool | None = Field(default=None, description="pass_fail mode.")
    score: int | None = Field(default=None, ge=1, le=5, description="score mode: 1 (worst) to 5 (best).")
    preference: Preference | None = Field(default=None, description="pairwise mode: the better answer, or tie.")
    comment: str | None = Field(default=None, max_length=10000)


class ReviewRatingRevisionOut(BaseModel):
    revision: int
    passed: bool | None = None
    score: int | None = None
    preference: Preference | None = None
    comment: str | None = None
    created_at: datetime


class ReviewRatingOut(BaseModel):
    object: str = "review_rating"
    id: str
    queue_id: str
    item_id: str
    reviewer: str
    passed: bool | None = None
    score: int | None = None
    preference: Preference | None = None
    comment: str | None = None
    revision: int = Field(description="1 for the first submission; each resubmission adds one.")
    created_at: datetime
    updated_at: datetime
    history: list[ReviewRatingRevisionOut] = Field(
        default_factory=list, description="Every submission of this reviewer for this item, oldest first."
    )
    queue_status: ReviewQueueStatus | None = Field(default=None, description="The queue's status after this rating.")


class ReviewItemOut(BaseModel):
    object: str = "review_item"
    id: str
    queue_id: str
    position: int = Field(description="Place in the queue's shuffled order.")
    mode: ReviewMode
    input: list[dict[str, Any]] = Field(description="The prompt messages the answers respond to.")
    reference: Any = None
    responses: list[ReviewResponse]
    n_ratings: int
    ratings_needed: int = Field(description="Ratings still missing before this item is complete.")
    rating: ReviewRatingOut | None = Field(default=None, description="The asking reviewer's current rating, if any.")


class ReviewItemPage(BaseModel):
    object: str = "list"
    data: list[ReviewItemOut]
    has_more: bool
    next_cursor: str | None = Field(default=None, description="Pass as `after` (items list in queue order).")


# ---------------------------------------------------------------------------------------------------------------------
# Summary


class AgreementEstimate(BaseModel):
    """An agreement figure with its bootstrap interval over items; null with a reason when it is undefined (e.g. every
    rating in one category, where chance agreement is 1)."""

    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    method: CiMethod | None = None
    n: int = Field(description="Items the figure is computed over.")
    n_resamples: int
    undefined_reason: str | None = None


class ReviewerPairAgreement(BaseModel):
    reviewers: list[str] = Field(min_length=2, max_length=2)
    n_items: int = Field(description="Items both rated.")
    agreement: AgreementEstimate = Field(description="Share of those items with the same rating.")
    kappa: AgreementEstimate = Field(description="Cohen's kappa (quadratic weights for scores, unweighted otherwise).")
    weights: Literal["none", "quadratic"]


class InterReviewerAgreement(BaseModel):
    n_items: int = Field(description="Items with ratings from two reviewers or more.")
    alpha: dict[str, AgreementEstimate] = Field(
        description="Krippendorff's alpha by distance metric: nominal for pass/fail and preferences; ordinal and "
        "interval for scores."
    )
    pairs: list[ReviewerPairAgreement] = Field(description="Cohen's kappa for every two reviewers who share items.")


class GraderAgreement(BaseModel):
    """One grader of the evaluation against the human majority on the reviewed items."""

    grader: str
    type: str
    llm_judge: bool
    basis: str = Field(description="What is compared, e.g. 'grader passed vs human majority pass'.")
    n_items: int = Field(description="Items with both a grader outcome and a human majority (ties left out).")
    agreement: AgreementEstimate
    kappa: AgreementEstimate
    grader_pass_rate: float | None = None
    human_pass_rate: float | None = None
    score_agreement: AgreementEstimate | None = Field(
        default=None,
        description="Score mode, graders that score 1-5 (llm_rubric on its 1-5 scale): share of human ratings the "
        "grader's score equals.",
    )
    score_kappa: AgreementEstimate | None = Field(
        default=None,
        description="Score mode, graders that score 1-5: quadratic-weighted kappa of the grader's score against each "
        "human score (items resampled with all their ratings).",
    )


class CandidateReview(BaseModel):
    candidate: str
    n_items: int = Field(description="Items of this candidate with at least one rating.")
    n_ratings: int
    pass_rate: ConfidenceInterval | None = Field(default=None, description="pass_fail: per item share of passes, mean.")
    mean_score: ConfidenceInterval | None = Field(default=None, description="score: per item mean score, mean.")
    score_counts: dict[str, int] | None = Field(default=None, description="score: ratings per score 1-5.")


class PairwiseReview(BaseModel):
    candidate_a: str
    candidate_b: str
    n_items: int
    a_preferred: ConfidenceInterval | None = None
    b_preferred: ConfidenceInterval | None = None
    tie: ConfidenceInterval | None = None


class ReviewSummary(BaseModel):
    object: str = "review_queue.summary"
    queue_id: str
    evaluation_id: str
    mode: ReviewMode
    status: ReviewQueueStatus
    confidence: float
    progress: ReviewQueueProgress
    candidates: list[CandidateReview] = Field(default_factory=list)
    pairwise: PairwiseReview | None = None
    inter_reviewer: InterReviewerAgreement
    graders: list[GraderAgreement] = Field(default_factory=list)
    most_trusted_grader: str | None = Field(
        default=None,
        description="The grader whose kappa with the humans has the highest lower bound (null when none is "
        "defined): the one to trust on this task.",
    )
    notes: list[str] = Field(default_factory=list, description="Figures left out and why.")
