"""Inputs, outputs and settings of generation runs (JSON-ready pydantic models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api_schemas.evaluations import RESERVED_PARAMS as _RESERVED_PARAMS
from service.providers.openai.client import ClientConfig
from service.providers.openai.errors import ErrorKind


def storable_text(text: str | None) -> str | None:
    """``text`` as a database and a JSON response can hold it. A server's answer may carry lone surrogates (valid
    JSON escapes such as ``\\ud800``, but not characters) or NUL, which would fail the sample's insert on every retry
    (PostgreSQL, SQLite) or every later read of it; each becomes U+FFFD."""
    if text is None or ("\x00" not in text and (text.isascii() or text.isprintable() or _encodes(text))):
        return text
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\x00", "\ufffd")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class GenRequest(BaseModel):
    """One chat completion to make. ``key`` identifies it across runs: results are stored by it and a resumed run
    skips keys already done."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(min_length=1, max_length=512)
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Sampling and other chat-completion parameters: temperature, max_tokens or max_completion_tokens, "
        "top_p, seed, stop, response_format, tools, ...",
    )

    @field_validator("params")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_RESERVED_PARAMS & v.keys())
        if clash:
            raise ValueError(f"params must not set {', '.join(clash)} (the runner owns them)")
        return v


class GenResult(BaseModel):
    key: str
    ok: bool
    output: str | None = Field(default=None, description="The assistant message's text ('' when it had none).")
    finish_reason: str | None = None
    refusal: str | None = None
    model: str | None = Field(default=None, description="The model the endpoint says answered.")
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float | None = Field(default=None, description="Duration of the last attempt's HTTP call.")
    total_s: float = Field(description="From the first attempt's start to the result, with waits and retries.")
    attempts: int
    error: str | None = None
    error_kind: ErrorKind | None = None
    status_code: int | None = None
    request_id: str | None = None

    @field_validator("output", "finish_reason", "refusal", "model", "error", "request_id")
    @classmethod
    def _storable(cls, v: str | None) -> str | None:
        return storable_text(v)


class RateLimits(BaseModel):
    """Limits the runner keeps. Requests and tokens per minute are ceilings; headers can lower them further."""

    max_concurrency: int = Field(default=16, ge=1, le=4096, description="Requests in flight at most, ever.")
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    learn_from_headers: bool = Field(default=True, description="Adopt lower limits from x-ratelimit-* headers.")
    burst_seconds: float = Field(default=1.0, gt=0, le=60, description="Largest burst, in seconds of allowance.")
    max_retries: int = Field(default=8, ge=0, le=100, description="Retries of a transient failure per request.")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    max_retry_after_s: float = Field(
        default=300.0, gt=0, description="A longer retry-after fails the request instead of stalling the run."
    )
    default_completion_tokens: int = Field(
        default=512, ge=0, description="Completion tokens assumed for the reservation when max_tokens is not set."
    )


class GenerationStats(BaseModel):
    total: int = Field(default=0, description="Requests taken from the input.")
    skipped: int = Field(default=0, description="Already done (skip_keys) or duplicate keys.")
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    rate_limited: int = Field(default=0, description="429 responses received (each retried unless counted below).")
    rate_limited_unretried: int = Field(default=0, description="429s that ended a request as failed.")
    server_errors: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0
    requests_per_s: float = Field(default=0.0, description="Finished requests (succeeded + failed) per second.")
    max_in_flight: int = 0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    limits: dict[str, dict[str, float | None]] = Field(
        default_factory=dict, description="Per model, the requests/tokens per minute in force at the end."
    )
    stopped: bool = Field(default=False, description="should_stop() ended the run early.")
    aborted: bool = Field(default=False, description="A fatal error (bad key, no quota, unknown model) ended the run.")
    abort_reason: str | None = None
    abort_kind: ErrorKind | None = Field(default=None, description="The kind of the error that ended the run.")


__all__ = ["ClientConfig", "ErrorKind", "GenRequest", "GenResult", "GenerationStats", "RateLimits"]
