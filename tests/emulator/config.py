"""Everything about the emulator that a test may want to change, in plain dataclasses.

Durations are in emulated seconds: the clock's `speed` decides how fast they pass in real time, and a clock with
speed 0 only moves when a test advances it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# (model as requested, messages) -> answer text, or None to fall back to the default answering rules.
AnswerFn = Callable[[str, list[dict]], "str | None"]

GPT4_SHUTDOWN = "2027-01-14"


@dataclass(frozen=True)
class ModelSpec:
    """One base model of the catalog. `aliases` resolve to `id` the way `gpt-4o-mini` resolves to its snapshot."""

    id: str
    created: int
    owned_by: str = "system"
    aliases: tuple[str, ...] = ()
    fine_tuning_methods: frozenset[str] = frozenset()
    encoding: str = "o200k_base"
    shutdown_date: str | None = None


def _spec(model_id: str, created: int, aliases: tuple[str, ...], methods: str = "", **kw: object) -> ModelSpec:
    return ModelSpec(
        id=model_id, created=created, aliases=aliases, fine_tuning_methods=frozenset(methods.split()), **kw
    )


def default_catalog() -> list[ModelSpec]:
    """The models this service meets in practice, with OpenAI's fine-tuning support and announced shutdowns."""
    return [
        _spec("gpt-4o-mini-2024-07-18", 1721172741, ("gpt-4o-mini",), "supervised dpo", shutdown_date=GPT4_SHUTDOWN),
        _spec("gpt-4o-2024-08-06", 1722814719, ("gpt-4o",), "supervised dpo", shutdown_date=GPT4_SHUTDOWN),
        _spec("gpt-4.1-2025-04-14", 1744316542, ("gpt-4.1",), "supervised dpo", shutdown_date=GPT4_SHUTDOWN),
        _spec("gpt-4.1-mini-2025-04-14", 1744318173, ("gpt-4.1-mini",), "supervised dpo", shutdown_date=GPT4_SHUTDOWN),
        _spec("gpt-4.1-nano-2025-04-14", 1744321025, ("gpt-4.1-nano",), "supervised dpo", shutdown_date=GPT4_SHUTDOWN),
        _spec("o4-mini-2025-04-16", 1744133506, ("o4-mini",), "reinforcement"),
        _spec("gpt-3.5-turbo-0125", 1706048358, ("gpt-3.5-turbo",), "supervised", encoding="cl100k_base"),
        _spec("davinci-002", 1692634301, (), "supervised", encoding="cl100k_base"),
        _spec("babbage-002", 1692634615, (), "supervised", encoding="cl100k_base"),
        _spec("gpt-5-2025-08-07", 1754425777, ("gpt-5",)),
        _spec("gpt-5-mini-2025-08-07", 1754425867, ("gpt-5-mini",)),
    ]


AZURE_DEPLOYMENTS_UNTIL = "2027-10-01"


def azure_catalog() -> list[ModelSpec]:
    """The models an Azure OpenAI resource fine-tunes (Azure's own list; gpt-4o-mini has no DPO there), dated by when
    their fine-tuned deployments retire (about 2027-10)."""
    return [
        _spec(
            "gpt-4o-mini-2024-07-18", 1721172741, ("gpt-4o-mini",), "supervised", shutdown_date=AZURE_DEPLOYMENTS_UNTIL
        ),
        _spec("gpt-4o-2024-08-06", 1722814719, ("gpt-4o",), "supervised dpo", shutdown_date=AZURE_DEPLOYMENTS_UNTIL),
        _spec("gpt-4.1-2025-04-14", 1744316542, ("gpt-4.1",), "supervised dpo", shutdown_date=AZURE_DEPLOYMENTS_UNTIL),
        _spec(
            "gpt-4.1-mini-2025-04-14",
            1744318173,
            ("gpt-4.1-mini",),
            "supervised dpo",
            shutdown_date=AZURE_DEPLOYMENTS_UNTIL,
        ),
        _spec(
            "gpt-4.1-nano-2025-04-14",
            1744321025,
            ("gpt-4.1-nano",),
            "supervised dpo",
            shutdown_date=AZURE_DEPLOYMENTS_UNTIL,
        ),
    ]


@dataclass(frozen=True)
class RateLimit:
    """Per-model limits; each is a token bucket of that capacity refilled evenly over one minute."""

    requests_per_minute: int = 10_000
    tokens_per_minute: int = 30_000_000


@dataclass(frozen=True)
class JobTiming:
    validating_seconds: float = 10.0
    queued_seconds: float = 10.0
    step_seconds: float = 2.0
    # Time between the last training step and `succeeded` (OpenAI's usage-policy evaluation of the new model).
    finalizing_seconds: float = 5.0


@dataclass(frozen=True)
class BatchTiming:
    validating_seconds: float = 5.0
    seconds_per_request: float = 1.0
    finalizing_seconds: float = 5.0
    cancelling_seconds: float = 2.0
    # A batch still unfinished this long after creation expires (OpenAI's only window is "24h").
    completion_window_seconds: float = 24 * 3600.0


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True)
class OutcomeRule:
    """Fail matching fine-tuning jobs once `fail_at` (a fraction of the training steps) is reached.

    A job matches when every given condition holds: `suffix` equals the job's suffix, and each `metadata` pair is
    present on the job.
    """

    suffix: str | None = None
    metadata: dict[str, str] | None = None
    fail_at: float = 0.5
    error: JobError = JobError(
        code="server_error", message="Fine-tuning failed due to an internal error. Please try again.", param=None
    )

    def matches(self, suffix: str | None, metadata: dict[str, str] | None) -> bool:
        if self.suffix is None and not self.metadata:
            return False
        if self.suffix is not None and self.suffix != suffix:
            return False
        return all((metadata or {}).get(k) == v for k, v in (self.metadata or {}).items())


# Odd but valid: a job whose metadata has ``emulator_odd`` set to one of these answers as the published description
# allows but no real job would: "succeeded_without_model" (succeeded, fine_tuned_model null), "negative_trained_tokens"
# (succeeded, trained_tokens below zero), "failed_without_error" (fails midway with error null).
ODD_JOB_ANSWERS = ("succeeded_without_model", "negative_trained_tokens", "failed_without_error")
ODD_JOB_KEY = "emulator_odd"


@dataclass(frozen=True)
class BatchOutcomeRule:
    """Force a batch whose metadata contains every pair to end as `outcome` ("failed" or "expired")."""

    metadata: dict[str, str]
    outcome: str = "expired"


FAULT_KINDS = (
    "429",
    "500",
    "503",
    "timeout",
    "act_then_timeout",
    "act_then_drop",
    "act_then_500",
    "act_then_truncate",
    "repeat_page",
    "empty_list",
)


@dataclass
class FaultRule:
    """Misbehave on requests whose "METHOD /path" matches `route` (a regex searched in e.g. "POST /v1/files").

    kind: "429" | "500" | "503": answer with that error instead of acting. "timeout": hold the request `delay_seconds`
    without acting, then answer 504. "act_then_timeout": act, then hold the response `delay_seconds`.
    "act_then_drop": act, then cut the connection mid-response. "act_then_500": act, then answer 500.
    "act_then_truncate": act, then answer 200 with only the first half of the JSON body (complete, but unreadable).
    Odd but valid list answers, as a server replaying the published examples gives them: "repeat_page" answers the
    first page whatever `after` asks for, with `has_more: true` and its first item repeated at the end (the page
    never advances, and ids repeat); "empty_list" answers an empty page without looking (a list that does not show
    what was just created).
    Fires on the next `count` matching requests, or with `probability` on each one (seeded, so reproducible).
    """

    route: str
    kind: str
    count: int | None = None
    probability: float | None = None
    delay_seconds: float = 30.0
    retry_after_seconds: float | None = 1.0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.count is None and self.probability is None:
            self.count = 1
        if self.count is not None and self.count < 0:
            raise ValueError("fault count must be >= 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("fault probability must be within [0, 1]")
        try:
            self._pattern = re.compile(self.route)
        except re.error as exc:
            raise ValueError(f"fault route {self.route!r} is not a valid regular expression: {exc}") from exc

    def matches(self, method: str, path: str) -> bool:
        return bool(self._pattern.search(f"{method.upper()} {path}"))

    def to_dict(self) -> dict:
        return {
            "route": self.route,
            "kind": self.kind,
            "count": self.count,
            "probability": self.probability,
            "delay_seconds": self.delay_seconds,
            "retry_after_seconds": self.retry_after_seconds,
            "fired": self.fired,
        }


@dataclass(frozen=True)
class AzureConfig:
    """What an Azure OpenAI resource does differently (documented in Microsoft Learn; listed against OpenAI's
    description in tests/unit/emulator/test_azure_contract.py)."""

    # Training and validation files: JSONL in UTF-8 with a byte-order mark.
    require_bom: bool = True
    # Azure says "pending" where OpenAI says "queued".
    status_names: tuple[tuple[str, str], ...] = (("queued", "pending"),)


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    # Emulated seconds per real second; 0 freezes the clock so that only `advance()` moves it.
    speed: float = 1.0
    # Seeds job seeds, fault probabilities and batch output order.
    seed: int = 0
    # Ids are random unless this is set (then they repeat from run to run).
    id_seed: int | None = None
    organization_id: str = "org-emulator"
    organization_name: str = "emulator"
    # None accepts any non-empty bearer key; a list accepts only those keys (answers 401 otherwise).
    api_keys: list[str] | None = None
    catalog: list[ModelSpec] = field(default_factory=default_catalog)
    max_file_bytes: int = 512 * 1024 * 1024
    min_training_examples: int = 10
    job_timing: JobTiming = field(default_factory=JobTiming)
    batch_timing: BatchTiming = field(default_factory=BatchTiming)
    outcome_rules: list[OutcomeRule] = field(
        default_factory=lambda: [
            OutcomeRule(suffix="fail-mid-run"),
            OutcomeRule(metadata={"emulator_outcome": "fail"}),
        ]
    )
    batch_outcome_rules: list[BatchOutcomeRule] = field(
        default_factory=lambda: [
            BatchOutcomeRule(metadata={"emulator_outcome": "expire"}, outcome="expired"),
            BatchOutcomeRule(metadata={"emulator_outcome": "fail"}, outcome="failed"),
        ]
    )
    # Chat answers: `answer_fn` first; then `correct_answers` (last user message -> right answer), which fine-tuned
    # models get right with probability `fine_tuned_accuracy` and base models with `base_accuracy`.
    answer_fn: AnswerFn | None = None
    correct_answers: dict[str, str] = field(default_factory=dict)
    wrong_answer: str = "I am not sure."
    fine_tuned_accuracy: float = 0.9
    base_accuracy: float = 0.3
    # Real seconds a chat completion takes; per-model values override the default.
    chat_latency_seconds: float = 0.0
    chat_latency_by_model: dict[str, float] = field(default_factory=dict)
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    default_rate_limit: RateLimit = field(default_factory=RateLimit)
    faults: list[FaultRule] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # "background": a thread delivers as soon as events occur. "manual": only `drain_webhooks()` delivers.
    webhook_delivery: str = "background"
    webhook_max_attempts: int = 3
    webhook_timeout_seconds: float = 5.0
    # How often (real seconds) a running clock is applied to jobs and batches without waiting for a request.
    tick_interval: float = 0.05
    # An Azure OpenAI resource instead of OpenAI (``AzureConfig``): the v1 API under /openai/v1, api-key auth, Azure's
    # file rules, model names and statuses, and deployments. Use ``EmulatorConfig.azure_resource()``.
    azure: AzureConfig | None = None

    @classmethod
    def azure_resource(cls, **kwargs: object) -> EmulatorConfig:
        kwargs.setdefault("catalog", azure_catalog())
        return cls(azure=AzureConfig(), **kwargs)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError("speed must be >= 0")
        if self.webhook_delivery not in ("background", "manual"):
            raise ValueError("webhook_delivery must be 'background' or 'manual'")
        if self.webhook_secret is not None and not self.webhook_secret.startswith("whsec_"):
            raise ValueError("webhook_secret must start with 'whsec_' (Standard Webhooks format)")
        for name in ("fine_tuned_accuracy", "base_accuracy"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
