"""What one batch attempt is, as persisted between steps; what a result and a failure of a batch carry."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.clock import from_unix
from service.evaluations.generation.types import GenResult
from service.providers.base import ProviderError
from service.providers.openai.errors import classify, is_call_failure

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
# OpenAI's documented limits for one batch input file (POST /v1/batches, input_file_id): at most 50,000 requests and
# 200 MB. Bytes are counted as 10^6 so that we stay under the limit whichever megabyte the provider means.
MAX_REQUESTS_PER_BATCH = 50_000
MAX_BYTES_PER_BATCH = 200_000_000
# Metadata: at most 16 pairs, keys up to 64 characters, values up to 512 (the OpenAPI description's Metadata).
TAG_KEY = "finetune_batch"
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
FILENAME_PREFIX = "finetune-batch"
# A batch created before the state we were given cannot be ours; the margin covers clock skew with the provider.
RECONCILE_SKEW = timedelta(minutes=10)
RECONCILE_MAX_PAGES = 20

BatchPhase = Literal["pending", "uploaded", "submitted", "finished", "failed", "cancelled"]
DONE_PHASES: frozenset[str] = frozenset({"finished", "failed", "cancelled"})
# Provider statuses (OpenAI's Batch.status) to our phases. ``expired`` still has output for the requests that ran, so
# it is "finished"; ``collect`` reports the others as not run.
PHASE_OF_STATUS: dict[str, BatchPhase] = {
    "validating": "submitted",
    "in_progress": "submitted",
    "finalizing": "submitted",
    "cancelling": "submitted",
    "completed": "finished",
    "expired": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
}
# Codes of results for requests the provider never ran: running them again (a new batch, or realtime) is safe.
NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled", "batch_failed", "batch_missing_line"})


class BatchError(ProviderError):
    """A Batch API call failed. ``transient`` ones are worth repeating the same step (after ``retry_after``);
    ``state`` is the progress made before the failure (e.g. ``uploaded``): persist it, then re-run the step."""

    def __init__(self, message: str, *, state: BatchState | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.state = state


class BatchCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchLineError(BaseModel):
    """A reason the provider gave for failing a whole batch (e.g. a line of the input file it could not read)."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchState(BaseModel):
    """Everything needed to resume one batch; persist ``model_dump(mode="json")`` after every step."""

    tag: str = Field(description="Our id of this batch attempt, stored in the batch's metadata.")
    phase: BatchPhase = "pending"
    model: str | None = Field(default=None, description="The one model all requests of the batch call.")
    custom_ids: list[str] = Field(default_factory=list, description="The request keys this batch covers, in order.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Sent with the batch (with the tag).")
    input_filename: str | None = None
    input_file_id: str | None = None
    input_bytes: int = 0
    input_sha256: str | None = None
    batch_id: str | None = None
    provider_status: str | None = Field(default=None, description="The provider's batch status, verbatim.")
    counts: BatchCounts = Field(default_factory=BatchCounts)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[BatchLineError] = Field(default_factory=list)
    input_tokens: int = Field(default=0, description="Usage the provider reports for the whole batch.")
    output_tokens: int = 0
    reconciled: bool = Field(default=False, description="The batch was found by its tag, not created by this run.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When we planned it.")
    submitted_at: datetime | None = Field(default=None, description="The provider's created_at of the batch.")
    expires_at: datetime | None = None
    finished_at: datetime | None = Field(default=None, description="completed/failed/expired/cancelled at.")
    polled_at: datetime | None = None

    @property
    def done(self) -> bool:
        """Nothing will change any more: ``collect`` can run."""
        return self.phase in DONE_PHASES


class BatchResult(GenResult):
    """A ``GenResult`` with what only a batch knows. ``retryable`` is True for requests that did not run (expired,
    cancelled, a failed batch, a line missing from both files) and for per-request 429 / 5xx answers."""

    error_code: str | None = Field(default=None, description="The provider's machine code, e.g. batch_expired.")
    retryable: bool = False
    batch_id: str | None = None


@contextmanager
def failing_as(what: str, state: BatchState | None) -> Iterator[None]:
    """Provider failures inside the block become ``BatchError`` naming ``what`` and carrying ``state``."""
    try:
        yield
    except BatchError:
        raise
    except ProviderError as exc:
        raise BatchError(
            f"{what}: {exc.message}",
            state=state,
            transient=exc.transient,
            status_code=exc.status_code,
            code=exc.code,
            param=exc.param,
            retry_after=exc.retry_after,
        ) from exc
    except Exception as exc:
        if not is_call_failure(exc):
            raise
        raise classify(exc).as_provider_error(what, BatchError, state=state) from exc


def apply_batch(state: BatchState, batch: Any) -> BatchState:
    """``state`` updated from a provider Batch object."""
    raw = batch.model_dump(mode="json") if hasattr(batch, "model_dump") else dict(batch)
    status = str(raw.get("status") or "")
    phase = PHASE_OF_STATUS.get(status)
    if phase is None:
        log.warning("unknown batch status %r on %s; keeping phase %s", status, raw.get("id"), state.phase)
        phase = state.phase
    counts = raw.get("request_counts") or {}
    errors = (raw.get("errors") or {}).get("data") or []
    usage = raw.get("usage") or {}
    finished = next(
        (from_unix(raw.get(f"{s}_at")) for s in ("completed", "failed", "expired", "cancelled") if raw.get(f"{s}_at")),
        None,
    )
    return state.model_copy(
        update={
            "phase": phase,
            "batch_id": raw.get("id") or state.batch_id,
            "input_file_id": raw.get("input_file_id") or state.input_file_id,
            "provider_status": status or state.provider_status,
            "model": raw.get("model") or state.model,
            "counts": BatchCounts(
                total=int(counts.get("total") or 0),
                completed=int(counts.get("completed") or 0),
                failed=int(counts.get("failed") or 0),
            ),
            "output_file_id": raw.get("output_file_id"),
            "error_file_id": raw.get("error_file_id"),
            "errors": [BatchLineError.model_validate(e) for e in errors if isinstance(e, dict)],
            "input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
            "submitted_at": from_unix(raw.get("created_at")) or state.submitted_at,
            "expires_at": from_unix(raw.get("expires_at")),
            "finished_at": finished,
            "polled_at": datetime.now(UTC),
        }
    )
