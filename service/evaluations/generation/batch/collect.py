"""Reading a finished batch: output and error files joined on ``custom_id``, one result per request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import openai

from service.evaluations.generation.batch.state import NOT_RUN_CODES, BatchResult, BatchState, failing_as
from service.evaluations.generation.types import GenResult
from service.providers.openai.errors import classify_status

log = logging.getLogger(__name__)


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
        # The same decision as for a realtime answer with this status and code.
        decided = classify_status(status, code=code, err_type=err.get("type")) if status is not None else None
        return BatchResult(
            **common,
            ok=False,
            attempts=1,
            error=f"{status}: {message_text}" if status is not None else str(message_text),
            error_kind=decided.kind if decided is not None else "other",
            error_code=code,
            status_code=status,
            request_id=request_id,
            retryable=decided is not None and decided.retryable,
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
        with failing_as(f"downloading batch file {file_id}", state):
            for item in _iter_file_lines(client, file_id):
                key = item.get("custom_id")
                if key not in wanted:
                    log.warning("batch %s: line for unknown custom_id %r ignored", state.batch_id, key)
                    continue
                if key not in found:
                    found[key] = parse_output_line(item, batch_id=state.batch_id, total_s=total_s)
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
