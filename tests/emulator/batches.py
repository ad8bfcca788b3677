"""Batches: validating -> in_progress (one request at a time) -> finalizing -> completed, or failed / expired /
cancelling -> cancelled. Output and error files hold one line per request, joined on custom_id, in shuffled order.

Forced outcomes (``BatchOutcomeRule.outcome``): "failed" fails validation, "expired" stalls until the window ends, and
"lose_lines" completes but leaves the last request's line out of both files while still counting it, as a provider
that loses lines would: clients must notice requests with no line at all."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from . import chat, params
from .errors import ApiError, invalid, not_found
from .store import BatchRecord, FileRecord

if TYPE_CHECKING:
    from .core import EmulatorCore

CREATE_FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
EMULATED_ENDPOINTS = ("/v1/chat/completions",)
MAX_REQUESTS = 50_000


def create(core: EmulatorCore, body: dict[str, Any]) -> BatchRecord:
    params.reject_unknown(body, CREATE_FIELDS)
    input_file_id = params.required_str(body, "input_file_id")
    endpoint = params.one_of("endpoint", params.required_str(body, "endpoint"), ENDPOINTS)
    window = params.one_of("completion_window", params.required_str(body, "completion_window"), ("24h",))
    metadata = params.metadata(body)
    if endpoint not in EMULATED_ENDPOINTS:
        raise invalid(
            f"The OpenAI emulator runs batches for {', '.join(EMULATED_ENDPOINTS)} only, not {endpoint}.",
            param="endpoint",
            code="unsupported_value",
        )
    record = core.store.files.get(input_file_id)
    if record is None:
        raise invalid(f"No such File object: {input_file_id}", param="input_file_id")
    if record.purpose != "batch":
        raise invalid(
            f"File {input_file_id} has purpose '{record.purpose}'; batch input files need purpose 'batch'.",
            param="input_file_id",
        )
    now = core.clock.now()
    batch = BatchRecord(
        id=core.ids.new("batch"),
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window=window,
        created_at=int(now),
        expires_at=int(now + core.config.batch_timing.completion_window_seconds),
        metadata=metadata,
        cursor=now,
    )
    for rule in core.config.batch_outcome_rules:
        if metadata and all(metadata.get(k) == v for k, v in rule.metadata.items()):
            batch.forced_outcome = rule.outcome
            break
    core.store.batches[batch.id] = batch
    return batch


def get(core: EmulatorCore, batch_id: str) -> BatchRecord:
    batch = core.store.batches.get(batch_id)
    if batch is None:
        raise not_found(f"No batch found with id '{batch_id}'.", param="batch_id")
    return batch


def cancel(core: EmulatorCore, batch: BatchRecord) -> None:
    if batch.status not in ("validating", "in_progress"):
        raise ApiError(409, f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id")
    batch.status = "cancelling"
    batch.cancelling_at = int(core.clock.now())
    batch.phase_elapsed = 0.0


def _phase_remaining(core: EmulatorCore, batch: BatchRecord) -> float | None:
    timing = core.config.batch_timing
    if batch.status == "validating":
        boundary = timing.validating_seconds
    elif batch.status == "in_progress":
        if batch.forced_outcome == "expired":
            return None  # stalls until the completion window runs out
        boundary = (batch.completed + batch.failed + 1) * timing.seconds_per_request
    elif batch.status == "finalizing":
        boundary = timing.finalizing_seconds
    elif batch.status == "cancelling":
        boundary = timing.cancelling_seconds
    else:
        return None
    return max(0.0, boundary - batch.phase_elapsed)


def advance(core: EmulatorCore, batch: BatchRecord, now: float) -> None:
    while not batch.terminal:
        need = _phase_remaining(core, batch)
        until_expiry = batch.expires_at - batch.cursor
        expires_first = need is None or need > until_expiry
        if batch.status in ("validating", "in_progress") and expires_first and until_expiry <= now - batch.cursor:
            batch.cursor = float(batch.expires_at)
            _finish(core, batch, "expired", batch.cursor)
            return
        available = now - batch.cursor
        if need is None or need > available:
            batch.phase_elapsed += max(0.0, available)
            batch.cursor = max(batch.cursor, now)
            return
        batch.cursor += need
        batch.phase_elapsed += need
        _on_boundary(core, batch, batch.cursor)


def _on_boundary(core: EmulatorCore, batch: BatchRecord, at: float) -> None:
    if batch.status == "validating":
        _validate(core, batch, at)
    elif batch.status == "in_progress":
        _run_one(core, batch)
        if batch.completed + batch.failed == batch.total:
            batch.status = "finalizing"
            batch.finalizing_at = int(at)
            batch.phase_elapsed = 0.0
    elif batch.status == "finalizing":
        _finish(core, batch, "completed", at)
    elif batch.status == "cancelling":
        _finish(core, batch, "cancelled", at)


def _line_error(code: str, message: str, line: int, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _validate(core: EmulatorCore, batch: BatchRecord, at: float) -> None:
    errors: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    seen: set[str] = set()
    record = core.store.files.get(batch.input_file_id)
    lines = [] if record is None else record.content.decode("utf-8", errors="replace").splitlines()
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError:
            errors.append(_line_error("invalid_json_line", "This line is not parseable as valid JSON.", line_no))
            continue
        if not isinstance(item, dict):
            errors.append(_line_error("invalid_json_line", "Each line must be a JSON object.", line_no))
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(_line_error("missing_required_parameter", "custom_id is required.", line_no, "custom_id"))
            continue
        if custom_id in seen:
            errors.append(
                _line_error("duplicate_custom_id", f"The custom_id {custom_id!r} is not unique.", line_no, "custom_id")
            )
            continue
        seen.add(custom_id)
        if item.get("method") != "POST":
            errors.append(_line_error("invalid_method", "Only POST is supported.", line_no, "method"))
            continue
        if item.get("url") != batch.endpoint:
            errors.append(
                _line_error(
                    "mismatched_endpoint",
                    f"The url {item.get('url')!r} does not match the batch endpoint {batch.endpoint!r}.",
                    line_no,
                    "url",
                )
            )
            continue
        if not isinstance(item.get("body"), dict):
            errors.append(_line_error("missing_required_parameter", "body must be an object.", line_no, "body"))
            continue
        requests.append(item)
    if record is None:
        errors.append(_line_error("file_not_found", f"Input file {batch.input_file_id} no longer exists.", 0))
    elif not requests and not errors:
        errors.append(_line_error("empty_file", "The input file has no requests.", 0))
    if len(requests) > MAX_REQUESTS:
        errors.append(_line_error("too_many_requests", f"A batch may hold at most {MAX_REQUESTS} requests.", 0))
    if batch.forced_outcome == "failed" and not errors:
        errors.append(_line_error("batch_failed", "The batch failed (forced by the emulator's outcome rules).", 0))
    if errors:
        batch.errors = errors
        _finish(core, batch, "failed", at)
        return
    batch.requests = requests
    batch.total = len(requests)
    batch.model = requests[0]["body"].get("model") if requests else None
    batch.status = "in_progress"
    batch.in_progress_at = int(at)
    batch.phase_elapsed = 0.0


def _run_one(core: EmulatorCore, batch: BatchRecord) -> None:
    item = batch.requests[batch.completed + batch.failed]
    request_id = core.ids.new("request")
    try:
        body, _ = chat.build(core, item["body"])
        status = 200
        batch.completed += 1
        usage = batch.usage or {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0,
        }
        usage["input_tokens"] += body["usage"]["prompt_tokens"]
        usage["output_tokens"] += body["usage"]["completion_tokens"]
        usage["total_tokens"] += body["usage"]["total_tokens"]
        batch.usage = usage
        target = batch.output_lines
    except ApiError as exc:
        body, status = exc.body(), exc.status
        batch.failed += 1
        target = batch.error_lines
    target.append(
        {
            "id": core.ids.new("batch_request"),
            "custom_id": item["custom_id"],
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        }
    )


def _write(core: EmulatorCore, batch: BatchRecord, lines: list[dict[str, Any]], kind: str, at: float) -> str | None:
    if not lines:
        return None
    shuffled = list(lines)
    random.Random(f"{core.config.seed}:{batch.id}:{kind}").shuffle(shuffled)
    record = FileRecord(
        id=core.ids.new("file"),
        filename=f"{batch.id}_{kind}.jsonl",
        purpose="batch_output",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in shuffled),
        created_at=int(at),
    )
    core.store.files[record.id] = record
    return record.id


def _finish(core: EmulatorCore, batch: BatchRecord, status: str, at: float) -> None:
    if status in ("expired", "cancelled"):
        code, message = (
            ("batch_expired", "This request could not be executed before the completion window expired.")
            if status == "expired"
            else ("batch_cancelled", "This request was not executed because the batch was cancelled.")
        )
        for item in batch.requests[batch.completed + batch.failed :]:
            batch.error_lines.append(
                {
                    "id": core.ids.new("batch_request"),
                    "custom_id": item["custom_id"],
                    "response": None,
                    "error": {"code": code, "message": message},
                }
            )
    if status == "completed" and batch.forced_outcome == "lose_lines" and batch.requests:
        lost = batch.requests[-1]["custom_id"]
        batch.output_lines = [line for line in batch.output_lines if line["custom_id"] != lost]
        batch.error_lines = [line for line in batch.error_lines if line["custom_id"] != lost]
    if status != "failed":
        batch.output_file_id = _write(core, batch, batch.output_lines, "output", at)
        batch.error_file_id = _write(core, batch, batch.error_lines, "error", at)
    batch.status = status
    setattr(batch, f"{status}_at", int(at))
    core.webhooks.emit(f"batch.{status}", batch.id, int(at))
