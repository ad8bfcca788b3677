"""Following a submitted batch: one GET per ``poll``; ``cancel`` asks the provider to stop it."""

from __future__ import annotations

from datetime import UTC, datetime

import openai

from service.evaluations.generation.batch.state import BatchState, apply_batch, failing_as
from service.evaluations.generation.batch.submit import find_batch
from service.providers.openai.client import no_retries


def poll(client: openai.OpenAI, state: BatchState) -> BatchState:
    """One GET of the batch: the state with the provider's status, counts and file ids. ``state.done`` says when to
    stop polling. A state never submitted is returned unchanged."""
    if state.batch_id is None or state.done:
        return state
    with failing_as(f"retrieving batch {state.batch_id}", state):
        batch = client.batches.retrieve(state.batch_id)
    return apply_batch(state, batch)


def cancel(client: openai.OpenAI, state: BatchState) -> BatchState:
    """Ask the provider to cancel. The batch goes through ``cancelling`` (phase still ``submitted``: keep polling)
    to ``cancelled``, after which ``collect`` returns the requests that finished. A batch never created is looked
    for by tag first (a crashed submit may have created it); when there is none the state is cancelled locally.
    Cancelling a batch that has already finished is not an error: its current state is returned."""
    if state.done:
        return state
    if state.batch_id is None:
        with failing_as("listing batches", state):
            existing = find_batch(client, state.tag, since=state.created_at)
        if existing is None:
            return state.model_copy(update={"phase": "cancelled", "finished_at": datetime.now(UTC)})
        state = apply_batch(state.model_copy(update={"reconciled": True}), existing)
        if state.done:
            return state
    assert state.batch_id is not None
    with failing_as(f"cancelling batch {state.batch_id}", state):
        try:
            batch = no_retries(client).batches.cancel(state.batch_id)
        except openai.APIStatusError as exc:
            # 409 / 400: it is no longer cancellable (finished or already cancelling meanwhile); read where it is.
            if exc.status_code not in (400, 409):
                raise
            batch = None
    if batch is None:
        return poll(client, state)
    return apply_batch(state, batch)
