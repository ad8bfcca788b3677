"""Generation through a provider's Batch API (OpenAI's ``/v1/batches``): about half the price, results within 24 h.

The caller is a database-backed work item that may be killed and re-run at any point, so the work is cut into steps
that each make at most a few provider calls and return a ``BatchState`` (JSON) for the caller to persist:

``split_requests`` (plan the parts) -> ``submit`` (upload the JSONL input, create the batch) -> ``poll`` (one GET,
repeated until ``state.done``) -> ``collect`` (download the output and error files, one ``BatchResult`` per request).
``cancel`` stops a batch; its finished requests stay collectable.

Crash safety: every batch carries our ``tag`` in its ``metadata`` and its input file a name derived from the tag and
the content. Before creating anything, ``submit`` looks for a batch with the tag (and for an uploaded file with that
name), so a re-run after a crash between "the provider created it" and "we persisted it" adopts the existing batch
instead of paying for a second one. A tag therefore names one attempt: to try again after a failed batch, use a new
tag (e.g. with an attempt number).

Reads may retry inside the SDK; creating calls never do: the SDK sends no idempotency key, so its retry of a create
whose answer was lost would make a second batch (the same rule as ``service.providers.openai_provider``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import openai
from pydantic import BaseModel, Field

from service.clock import from_unix
from service.errors import InvalidInput
from service.evaluations.generation.ratelimit import parse_retry_after
from service.evaluations.generation.types import ClientConfig, ErrorKind, GenRequest, GenResult
from service.providers.base import ProviderError

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


# Input --------------------------------------------------------------------------------------------------------------


def _line(request: GenRequest) -> bytes:
    body = {"model": request.model, "messages": request.messages, **request.params}
    item = {"custom_id": request.key, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def build_batch_lines(requests: Iterable[GenRequest]) -> Iterator[bytes]:
    """One JSONL line (with its newline) per request, ``custom_id`` = ``request.key``. Raises ``InvalidInput`` on a
    repeated key: the provider would fail the whole batch for it, and results could not be joined."""
    seen: set[str] = set()
    for request in requests:
        if request.key in seen:
            raise InvalidInput(f"request key {request.key!r} appears twice; custom_id must be unique in a batch")
        seen.add(request.key)
        yield _line(request)


def split_requests(
    requests: Iterable[GenRequest],
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
) -> list[list[GenRequest]]:
    """The requests cut into batch-sized parts: one model per part (a batch input file may only call one model), at
    most ``max_requests`` requests and ``max_bytes`` of JSONL each. Deterministic for the same input order, so a
    re-run plans the same parts. Raises ``InvalidInput`` for a repeated key or a request bigger than ``max_bytes``."""
    if max_requests < 1 or max_bytes < 1:
        raise ValueError("max_requests and max_bytes must be positive")
    by_model: dict[str, list[tuple[GenRequest, int]]] = {}
    seen: set[str] = set()
    for request in requests:
        if request.key in seen:
            raise InvalidInput(f"request key {request.key!r} appears twice; custom_id must be unique in a batch")
        seen.add(request.key)
        size = len(_line(request))
        if size > max_bytes:
            raise InvalidInput(
                f"request {request.key!r} is {size} bytes as a batch line, more than the {max_bytes} bytes a batch "
                "input file may hold"
            )
        by_model.setdefault(request.model, []).append((request, size))
    parts: list[list[GenRequest]] = []
    for items in by_model.values():
        part: list[GenRequest] = []
        part_bytes = 0
        for request, size in items:
            if part and (len(part) >= max_requests or part_bytes + size > max_bytes):
                parts.append(part)
                part, part_bytes = [], 0
            part.append(request)
            part_bytes += size
        if part:
            parts.append(part)
    return parts


def plan_batches(
    requests: Iterable[GenRequest],
    tag: str,
    *,
    metadata: Mapping[str, str] | None = None,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
) -> list[BatchState]:
    """``pending`` states of the parts ``split_requests`` makes, tagged ``part_tag(tag, i)``. Persist them before
    the first ``submit``: their ``created_at`` then bounds how far back a re-run looks for batches it created."""
    meta = _check_metadata({**(metadata or {}), TAG_KEY: tag})
    return [
        BatchState(
            tag=part_tag(tag, index),
            model=part[0].model,
            custom_ids=[r.key for r in part],
            metadata={**meta, TAG_KEY: part_tag(tag, index)},
        )
        for index, part in enumerate(split_requests(requests, max_requests=max_requests, max_bytes=max_bytes))
    ]


def part_tag(tag: str, index: int) -> str:
    """The tag of part ``index`` of a split run: ``submit_all`` uses it, and a caller submitting parts one by one
    should too, so that both find the same batches."""
    return f"{tag}/part{index}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def input_filename(tag: str, sha256: str) -> str:
    """A recognisable, reproducible name: the tag (made filename-safe, shortened) and the content hash."""
    safe = _UNSAFE.sub("_", tag).strip("_")[:80] or "batch"
    tag_hash = hashlib.sha256(tag.encode()).hexdigest()[:8]
    return f"{FILENAME_PREFIX}_{safe}_{tag_hash}_{sha256[:16]}.jsonl"


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidInput(f"batch metadata holds {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput("batch metadata keys and values must be strings")
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise InvalidInput(
                f"batch metadata {key!r}: keys may have {MAX_METADATA_KEY} characters, values {MAX_METADATA_VALUE}"
            )
    return dict(metadata)


# Provider calls -----------------------------------------------------------------------------------------------------


def build_batch_client(config: ClientConfig, *, max_retries: int = 2) -> openai.OpenAI:
    """A synchronous client for ``config``'s endpoint. Its retries serve reads; creating calls here turn them off."""
    return openai.OpenAI(
        api_key=config.api_key.get_secret_value(),
        base_url=config.base_url,
        organization=config.organization,
        project=config.project,
        timeout=config.timeout_s,
        max_retries=max_retries,
        default_headers=config.default_headers or None,
    )


def _no_retries(client: openai.OpenAI) -> openai.OpenAI:
    return client.with_options(max_retries=0)


def _error(exc: Exception, what: str, state: BatchState | None) -> BatchError:
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return BatchError(
            f"{what}: cannot reach the provider: {exc}", state=state, transient=True, code="provider_unreachable"
        )
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        err = body.get("error", body) if isinstance(body, dict) else {}
        err = err if isinstance(err, dict) else {}
        status = exc.status_code
        code = err.get("code") or f"http_{status}"
        # insufficient_quota is a 429 that no wait cures.
        transient = (status in (408, 409, 429) or status >= 500) and code != "insufficient_quota"
        return BatchError(
            f"{what}: {err.get('message') or exc.message}",
            state=state,
            transient=transient,
            status_code=status,
            code=code,
            param=err.get("param"),
            retry_after=parse_retry_after(exc.response.headers),
        )
    return BatchError(f"{what}: {type(exc).__name__}: {exc}", state=state, transient=True, code="provider_error")


def _apply(state: BatchState, batch: Any) -> BatchState:
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


def find_batch(
    client: openai.OpenAI,
    tag: str,
    *,
    since: datetime | None = None,
    max_pages: int = RECONCILE_MAX_PAGES,
    page_size: int = 100,
) -> Any | None:
    """The newest batch whose metadata carries ``tag``, or None. The list is newest first and has no metadata
    filter, so the walk stops at batches created before ``since`` (minus a clock-skew margin) or after
    ``max_pages`` pages."""
    cutoff = None if since is None else (since - RECONCILE_SKEW).timestamp()
    after: str | None = None
    for _ in range(max_pages):
        kwargs: dict[str, Any] = {"limit": page_size}
        if after:
            kwargs["after"] = after
        page = client.batches.list(**kwargs)
        for batch in page.data:
            if (batch.metadata or {}).get(TAG_KEY) == tag:
                return batch
            if cutoff is not None and batch.created_at < cutoff:
                return None
        if not page.data or not getattr(page, "has_more", False):
            return None
        after = page.data[-1].id
    return None


def find_input_file(client: openai.OpenAI, filename: str, size: int) -> str | None:
    """The id of an uploaded batch file named ``filename`` with ``size`` bytes (one a crashed run uploaded)."""
    for f in client.files.list(purpose="batch", order="desc"):
        if f.filename == filename and f.bytes == size and getattr(f, "status", "processed") not in ("error", "deleted"):
            return f.id
    return None


def submit(
    client: openai.OpenAI,
    requests: Iterable[GenRequest],
    tag: str,
    *,
    metadata: Mapping[str, str] | None = None,
    state: BatchState | None = None,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
) -> BatchState:
    """Upload ``requests`` as a JSONL file and create one batch for them, tagged ``tag``; returns the ``submitted``
    state. Pass the ``state`` persisted from an earlier call to resume it (a submitted one is returned as it is).

    Safe to repeat after a crash at any point: a batch already tagged ``tag`` is adopted (``reconciled``) instead of
    creating a second one, and an input file already uploaded under the same name is reused. Requests must fit one
    batch (one model, ``max_requests``, ``max_bytes``; see ``split_requests`` / ``submit_all``), else
    ``InvalidInput``. Provider failures raise ``BatchError`` carrying the progress made.
    """
    if state is not None:
        if state.tag != tag:
            raise ValueError(f"state is for tag {state.tag!r}, not {tag!r}")
        if state.phase not in ("pending", "uploaded"):
            return state
    if not tag or len(tag) > MAX_METADATA_VALUE:
        raise InvalidInput(f"a batch tag must have 1 to {MAX_METADATA_VALUE} characters")
    requests = list(requests)
    if not requests:
        raise InvalidInput("a batch needs at least one request")
    models = {r.model for r in requests}
    if len(models) > 1:
        raise InvalidInput(f"a batch calls one model; these requests call {len(models)}: use split_requests")
    if len(requests) > max_requests:
        raise InvalidInput(f"{len(requests)} requests are more than the {max_requests} a batch may hold")
    content = b"".join(build_batch_lines(requests))
    if len(content) > max_bytes:
        raise InvalidInput(f"the batch input is {len(content)} bytes, more than the {max_bytes} a batch may hold")
    sha = hashlib.sha256(content).hexdigest()
    # A planned state already holds the caller's metadata; the tag always wins over a same-named key.
    meta = _check_metadata({**(state.metadata if state else {}), **(metadata or {}), TAG_KEY: tag})
    keys = [r.key for r in requests]
    # Only a persisted state bounds the search: whatever its plan created is newer than it. Without one, a crashed
    # run may have created the batch any time before, so the walk goes back as far as it may.
    since = None if state is None else state.created_at
    if state is None:
        state = BatchState(tag=tag, model=requests[0].model, custom_ids=keys)
    elif state.custom_ids and state.custom_ids != keys:
        raise ValueError(f"the requests differ from those batch {tag!r} was planned with")
    state = state.model_copy(
        update={
            "model": requests[0].model,
            "custom_ids": keys,
            "metadata": meta,
            "input_filename": input_filename(tag, sha),
            "input_bytes": len(content),
            "input_sha256": sha,
        }
    )

    # Reconcile first: a batch with our tag means an earlier run created it and died before persisting.
    try:
        existing = find_batch(client, tag, since=since)
    except openai.OpenAIError as exc:
        raise _error(exc, "listing batches", state) from exc
    if existing is not None:
        log.info("batch %s already exists for tag %s; adopting it", existing.id, tag)
        return _apply(state.model_copy(update={"reconciled": True}), existing)

    creator = _no_retries(client)
    if state.input_file_id is None:
        assert state.input_filename is not None
        try:
            file_id = find_input_file(client, state.input_filename, len(content))
            if file_id is None:
                file_id = creator.files.create(file=(state.input_filename, content), purpose="batch").id
        except openai.OpenAIError as exc:
            raise _error(exc, "uploading the batch input", state) from exc
        state = state.model_copy(update={"input_file_id": file_id, "phase": "uploaded"})

    try:
        batch = creator.batches.create(
            input_file_id=state.input_file_id,  # type: ignore[arg-type]
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata=meta,
        )
    except openai.OpenAIError as exc:
        raise _error(exc, "creating the batch", state) from exc
    return _apply(state, batch)


def submit_all(
    client: openai.OpenAI,
    requests: Iterable[GenRequest],
    tag: str,
    *,
    metadata: Mapping[str, str] | None = None,
    states: list[BatchState] | None = None,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
) -> list[BatchState]:
    """``split_requests`` then ``submit`` each part as ``part_tag(tag, i)``. Pass the ``states`` persisted so far
    to skip parts already submitted. A failure raises ``BatchError`` whose ``state`` is the failing part's; the
    parts before it are already on the provider and a re-run finds them by tag."""
    parts = split_requests(requests, max_requests=max_requests, max_bytes=max_bytes)
    known = {s.tag: s for s in states or []}
    out: list[BatchState] = []
    for index, part in enumerate(parts):
        ptag = part_tag(tag, index)
        out.append(
            submit(
                client,
                part,
                ptag,
                metadata=metadata,
                state=known.get(ptag),
                max_requests=max_requests,
                max_bytes=max_bytes,
            )
        )
    return out


def poll(client: openai.OpenAI, state: BatchState) -> BatchState:
    """One GET of the batch: the state with the provider's status, counts and file ids. ``state.done`` says when to
    stop polling. A state never submitted is returned unchanged."""
    if state.batch_id is None or state.done:
        return state
    try:
        batch = client.batches.retrieve(state.batch_id)
    except openai.OpenAIError as exc:
        raise _error(exc, f"retrieving batch {state.batch_id}", state) from exc
    return _apply(state, batch)


def cancel(client: openai.OpenAI, state: BatchState) -> BatchState:
    """Ask the provider to cancel. The batch goes through ``cancelling`` (phase still ``submitted``: keep polling)
    to ``cancelled``, after which ``collect`` returns the requests that finished. A batch never created is looked
    for by tag first (a crashed submit may have created it); when there is none the state is cancelled locally.
    Cancelling a batch that has already finished is not an error: its current state is returned."""
    if state.done:
        return state
    if state.batch_id is None:
        try:
            existing = find_batch(client, state.tag, since=state.created_at)
        except openai.OpenAIError as exc:
            raise _error(exc, "listing batches", state) from exc
        if existing is None:
            return state.model_copy(update={"phase": "cancelled", "finished_at": datetime.now(UTC)})
        state = _apply(state.model_copy(update={"reconciled": True}), existing)
        if state.done:
            return state
    assert state.batch_id is not None
    try:
        batch = _no_retries(client).batches.cancel(state.batch_id)
    except openai.APIStatusError as exc:
        # 409 / 400: it is no longer cancellable (finished or already cancelling meanwhile); read where it is.
        if exc.status_code in (400, 409):
            return poll(client, state)
        raise _error(exc, f"cancelling batch {state.batch_id}", state) from exc
    except openai.OpenAIError as exc:
        raise _error(exc, f"cancelling batch {state.batch_id}", state) from exc
    return _apply(state, batch)


# Output -------------------------------------------------------------------------------------------------------------


def _kind_of(status: int | None, code: str | None) -> ErrorKind:
    if status == 429:
        return "insufficient_quota" if code == "insufficient_quota" else "rate_limited"
    if status == 401:
        return "authentication"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status in (400, 413, 422):
        return "bad_request"
    if status is not None and status >= 500:
        return "server_error"
    return "other"


def _iter_file_lines(client: openai.OpenAI, file_id: str) -> Iterator[dict[str, Any]]:
    # Streamed: an output file can be far larger than we want in memory at once.
    with client.files.with_streaming_response.content(file_id) as response:
        for number, text in enumerate(response.iter_lines(), start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError:
                log.warning("batch file %s line %d is not JSON; skipped", file_id, number)
                continue
            if isinstance(item, dict):
                yield item


def parse_output_line(item: Mapping[str, Any], *, batch_id: str | None = None, total_s: float = 0.0) -> BatchResult:
    """One line of an output or error file (``{id, custom_id, response: {status_code, request_id, body}, error}``)
    as a result."""
    key = str(item.get("custom_id"))
    response = item.get("response") or None
    error = item.get("error") or None
    common: dict[str, Any] = {"key": key, "batch_id": batch_id, "total_s": total_s}
    if isinstance(response, Mapping):
        raw_status = response.get("status_code")
        status = int(raw_status) if str(raw_status).isdigit() else None
        body = response.get("body") if isinstance(response.get("body"), Mapping) else {}
        request_id = response.get("request_id")
        if status == 200 and error is None:
            choices = body.get("choices") or []
            choice = choices[0] if choices and isinstance(choices[0], Mapping) else {}
            message = choice.get("message") if isinstance(choice.get("message"), Mapping) else {}
            usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
            return BatchResult(
                **common,
                ok=True,
                output=message.get("content") or "",
                finish_reason=choice.get("finish_reason"),
                refusal=message.get("refusal"),
                model=body.get("model"),
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                attempts=1,
                status_code=status,
                request_id=request_id,
            )
        err = body.get("error") if isinstance(body.get("error"), Mapping) else {}
        code = err.get("code") or (error or {}).get("code")
        message_text = err.get("message") or (error or {}).get("message") or "the request failed"
        kind = _kind_of(status, code)
        return BatchResult(
            **common,
            ok=False,
            attempts=1,
            error=f"{status}: {message_text}" if status is not None else str(message_text),
            error_kind=kind,
            error_code=code,
            status_code=status,
            request_id=request_id,
            retryable=kind in ("rate_limited", "server_error"),
        )
    code = (error or {}).get("code") if isinstance(error, Mapping) else None
    message_text = (error or {}).get("message") if isinstance(error, Mapping) else None
    return BatchResult(
        **common,
        ok=False,
        attempts=0 if code in NOT_RUN_CODES else 1,
        error=f"{code}: {message_text}" if code else str(message_text or "the request failed"),
        error_kind="other",
        error_code=code,
        retryable=code in NOT_RUN_CODES,
    )


def _not_run(key: str, state: BatchState, code: str, message: str, total_s: float) -> BatchResult:
    return BatchResult(
        key=key,
        ok=False,
        attempts=0,
        error=f"{code}: {message}",
        error_kind="other",
        error_code=code,
        retryable=True,
        batch_id=state.batch_id,
        total_s=total_s,
    )


def collect(client: openai.OpenAI, state: BatchState) -> list[BatchResult]:
    """One result per ``state.custom_ids`` (in that order) once ``state.done``: the output and error files joined
    on ``custom_id``. Requests with no line in either file (expired, cancelled, lost) and every request of a failed
    batch come back failed with ``retryable=True`` and ``error_code`` in ``NOT_RUN_CODES``. Lines for ids the batch
    does not cover are ignored; ``total_s`` is the batch's time from creation to its end."""
    if not state.done:
        raise ValueError(f"batch {state.tag!r} is {state.phase}; poll until it is done before collecting")
    total_s = 0.0
    if state.submitted_at is not None and state.finished_at is not None:
        total_s = max(0.0, (state.finished_at - state.submitted_at).total_seconds())
    wanted = set(state.custom_ids)
    found: dict[str, BatchResult] = {}
    # Output before errors: should a request appear in both, its answer wins.
    for file_id in (state.output_file_id, state.error_file_id):
        if not file_id:
            continue
        try:
            for item in _iter_file_lines(client, file_id):
                key = item.get("custom_id")
                if key not in wanted:
                    log.warning("batch %s: line for unknown custom_id %r ignored", state.batch_id, key)
                    continue
                if key not in found:
                    found[key] = parse_output_line(item, batch_id=state.batch_id, total_s=total_s)
        except openai.OpenAIError as exc:
            raise _error(exc, f"downloading batch file {file_id}", state) from exc
    if state.phase == "failed":
        reasons = "; ".join(
            f"{e.code or 'error'}{f' (line {e.line})' if e.line else ''}: {e.message or ''}" for e in state.errors
        )
        code, message = "batch_failed", reasons or "the batch failed before running"
    elif state.provider_status == "expired":
        code, message = "batch_expired", "not run before the batch's completion window ended"
    elif state.phase == "cancelled":
        code, message = "batch_cancelled", "not run: the batch was cancelled"
    else:
        code, message = "batch_missing_line", "the batch ended without a line for this request in either file"
    return [found.get(key) or _not_run(key, state, code, message, total_s) for key in state.custom_ids]


def not_run(results: Iterable[GenResult]) -> list[str]:
    """Keys of results for requests the provider never ran (safe to request again, e.g. in a new batch)."""
    return [r.key for r in results if isinstance(r, BatchResult) and r.error_code in NOT_RUN_CODES]


__all__ = [
    "COMPLETION_WINDOW",
    "DONE_PHASES",
    "ENDPOINT",
    "MAX_BYTES_PER_BATCH",
    "MAX_REQUESTS_PER_BATCH",
    "NOT_RUN_CODES",
    "TAG_KEY",
    "BatchCounts",
    "BatchError",
    "BatchLineError",
    "BatchPhase",
    "BatchResult",
    "BatchState",
    "build_batch_client",
    "build_batch_lines",
    "cancel",
    "collect",
    "find_batch",
    "find_input_file",
    "input_filename",
    "not_run",
    "parse_output_line",
    "part_tag",
    "plan_batches",
    "poll",
    "split_requests",
    "submit",
    "submit_all",
]
