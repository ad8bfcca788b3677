"""Batch mode for one candidate: submit its requests to the provider's Batch API, come back to poll, collect.

Each call does what is due and returns when to come back; the batch states live in the evaluation's progress, so a
killed worker resumes where it was, and ``submit`` reconciles by tag before creating so a crash between the
provider's answer and our commit never makes a second batch. Requests the provider never ran (expired, cancelled
batch, lost lines) are submitted again under a new tag, up to ``MAX_ATTEMPTS`` times; then they are stored as failed.
"""

from __future__ import annotations

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
from service.providers.openai.client import sync_client

POLL_S = 30.0
MAX_ATTEMPTS = 3


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
        if not states or any(s.phase == "pending" or s.batch_id is None for s in states):
            states = submit_all(
                client, requests, tag, metadata={"finetune_evaluation_id": evaluation.id}, states=states
            )
            _save(ctx, name, states, attempt, phase="batch_submitted")
        if ctx.heartbeat(force=True):
            states = [s if s.done else cancel(client, s) for s in states]
        states = [s if s.done else poll(client, s) for s in states]
        _save(ctx, name, states, attempt, phase="batch_submitted")
        if not all(s.done for s in states):
            delay = max(ctx.settings.poll_min_s, POLL_S * ctx.settings.poll_scale)
            return utcnow() + timedelta(seconds=delay)
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
        raise FatalRunError("batch_failed", f"candidate {name!r}: {exc}", name) from exc
    finally:
        client.close()
    _save(ctx, name, [], attempt + 1 if retry else attempt, phase="generating" if retry else "done")
    if retry and not ctx.cancelled:
        return utcnow()
    return None


def _save(ctx: Any, name: str, states: list[BatchState], attempt: int, *, phase: str) -> None:
    batches = [s.model_dump(mode="json") for s in states]
    ctx.update_candidate(name, phase=phase, batch_attempt=attempt, batches=batches, mode="batch")
