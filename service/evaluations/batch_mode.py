"""Batch mode for one candidate: submit its requests to the provider's Batch API, come back to poll, collect.

Each call does what is due and returns when to come back; the batch states live in the evaluation's progress, so a
killed worker resumes where it was, and ``submit`` reconciles by tag before creating so a crash between the
provider's answer and our commit never makes a second batch. Requests the provider never ran (expired, cancelled
batch, lost lines) are submitted again under a new tag, up to ``MAX_ATTEMPTS`` times; then they are stored as failed.

A cancelled evaluation winds its batches down before it ends: each batch still out is cancelled at the provider (it
would otherwise keep running and billing), the run comes back until the provider says ``cancelled``, and the requests
the batch finished meanwhile are kept as partial results. A provider that refuses is recorded on the candidate
(``batch_cancel``) rather than waited for forever.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from service.clock import utcnow
from service.evaluations.generation.batch import (
    NOT_RUN_CODES,
    BatchError,
    BatchState,
    cancel,
    collect,
    poll,
    submit_all,
)
from service.net import is_refusal
from service.providers.openai.client import sync_client

log = logging.getLogger(__name__)

POLL_S = 30.0
MAX_ATTEMPTS = 3
# Winding down after a cancel: transient failures of the cancel call are tried again this many times, and a batch
# the provider leaves in ``cancelling`` longer than this is reported, not waited for (OpenAI documents up to 10 min).
CANCEL_TRIES = 5
CANCEL_WAIT = timedelta(hours=1)


def batches_out(evaluation: Any) -> set[str]:
    """Names of the candidates whose batches were submitted and not collected yet: a cancel must reach them."""
    candidates = (evaluation.progress or {}).get("candidates") or {}
    return {
        name
        for name, entry in candidates.items()
        if (entry or {}).get("phase") == "batch_submitted" and (entry or {}).get("batches")
    }


def step(ctx: Any, evaluation: Any, work: Any) -> datetime | None:
    """One pass for ``work`` (a ``run.CandidateWork``); returns when to come back, or None when it is answered."""
    from service.evaluations.run import FatalRunError

    name, writer = work.name, work.writer

    entry = dict((evaluation.progress.get("candidates") or {}).get(name) or {})
    attempt = int(entry.get("batch_attempt", 0))
    states = [BatchState.model_validate(s) for s in entry.get("batches") or []]
    tag = f"{evaluation.id}/{name}/a{attempt}"
    # The todo list is stable while batches are out (nothing is stored for this candidate meanwhile), so the same
    # requests map onto the same planned parts.
    requests = work.requests()
    client = sync_client(work.target.client)
    try:
        if not ctx.cancelled and (not states or any(s.phase == "pending" or s.batch_id is None for s in states)):
            states = submit_all(
                client, requests, tag, metadata={"finetune_evaluation_id": evaluation.id}, states=states
            )
            _save(ctx, name, states, attempt, phase="batch_submitted")
        if ctx.heartbeat(force=True):
            return _wind_down(ctx, name, client, states, writer, attempt, entry)
        states = [s if s.done else poll(client, s) for s in states]
        _save(ctx, name, states, attempt, phase="batch_submitted")
        if not all(s.done for s in states):
            return _later(ctx)
        retry = False
        for state in states:
            for result in collect(client, state):
                if getattr(result, "error_code", None) in NOT_RUN_CODES and attempt + 1 < MAX_ATTEMPTS:
                    retry = True
                    continue
                writer.add(result)
        writer.flush()
    except BatchError as exc:
        if exc.transient:
            raise  # the run backs off and comes back
        # An endpoint address the outbound policy refuses gets the code the API gives a refused URL, as in realtime.
        code = "url_not_allowed" if is_refusal(exc) else "batch_failed"
        raise FatalRunError(code, f"candidate {name!r}: {exc}", name) from exc
    finally:
        client.close()
    _save(ctx, name, [], attempt + 1 if retry else attempt, phase="generating" if retry else "done")
    if retry and not ctx.cancelled:
        return utcnow()
    return None


def _wind_down(
    ctx: Any, name: str, client: Any, states: list[BatchState], writer: Any, attempt: int, entry: dict[str, Any]
) -> datetime | None:
    """A cancel is pending: cancel every batch still running at the provider, come back until each has stopped,
    then keep the answers they finished. Returns when to come back, or None once the candidate is wound down."""
    since = _parse_time(entry.get("cancel_started_at")) or utcnow()
    tries = int(entry.get("cancel_tries", 0))
    # Batches (by id, or tag when never created) the provider did not cancel, with the reason: not asked again.
    refused: dict[str, str] = dict(entry.get("cancel_refused") or {})
    out: list[BatchState] = []
    transient = False
    for state in states:
        if state.done or _key(state) in refused:
            out.append(state)
            continue
        try:
            # Asked once; while the provider is cancelling, reading where it is is enough.
            out.append(poll(client, state) if state.provider_status == "cancelling" else cancel(client, state))
        except BatchError as exc:
            if exc.transient and tries + 1 < CANCEL_TRIES:
                transient = True
            else:
                refused[_key(state)] = str(exc)
                log.warning("candidate %s: the provider did not cancel batch %s: %s", name, _key(state), exc)
            out.append(exc.state or state)
    running = [s for s in out if not s.done and _key(s) not in refused]
    if running and utcnow() - since >= CANCEL_WAIT:
        refused.update({_key(s): f"still {s.provider_status} {CANCEL_WAIT} after the cancel" for s in running})
        running = []
    if transient or running:
        ctx.update_candidate(
            name,
            batches=[s.model_dump(mode="json") for s in out],
            cancel_started_at=since.isoformat(),
            cancel_tries=tries + 1 if transient else tries,
            cancel_refused=refused,
        )
        return _later(ctx)
    # Every batch has stopped (or the provider would not stop it): keep what finished; nothing is submitted again.
    uncollected: dict[str, str] = {}
    for state in out:
        if not state.done:
            continue
        try:
            results = collect(client, state)
        except BatchError as exc:
            if exc.transient:
                raise  # the run backs off and comes back
            uncollected[_key(state)] = str(exc)
            continue
        for result in results:
            if getattr(result, "error_code", None) not in NOT_RUN_CODES:
                writer.add(result)
    writer.flush()
    cancelled = [s.batch_id for s in out if s.batch_id and s.phase == "cancelled"]
    notes = [f"cancelled at the provider: {', '.join(cancelled)}"] if cancelled else []
    if refused:
        listed = "; ".join(f"{k}: {v}" for k, v in refused.items())
        notes.append(f"not cancelled by the provider (it may still run and bill): {listed}")
    if uncollected:
        notes.append("answers not collected: " + "; ".join(f"{k}: {v}" for k, v in uncollected.items()))
    ctx.update_candidate(
        name,
        phase="cancelled",
        batch_attempt=attempt,
        batches=[s.model_dump(mode="json") for s in out],
        cancel_refused=refused,
        batch_cancel=" | ".join(notes) or "no batch was running at the provider",
    )
    return None


def _key(state: BatchState) -> str:
    return state.batch_id or state.tag


def _later(ctx: Any) -> datetime:
    return utcnow() + timedelta(seconds=max(ctx.settings.poll_min_s, POLL_S * ctx.settings.poll_scale))


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _save(ctx: Any, name: str, states: list[BatchState], attempt: int, *, phase: str) -> None:
    batches = [s.model_dump(mode="json") for s in states]
    ctx.update_candidate(name, phase=phase, batch_attempt=attempt, batches=batches, mode="batch")
