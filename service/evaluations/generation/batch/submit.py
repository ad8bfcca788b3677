"""Submitting a batch: reconcile by tag, upload the input once, create the batch once."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import openai

from service.errors import InvalidInput
from service.evaluations.generation.batch.plan import (
    build_batch_lines,
    check_metadata,
    input_filename,
    part_tag,
    split_requests,
)
from service.evaluations.generation.batch.state import (
    COMPLETION_WINDOW,
    ENDPOINT,
    MAX_BYTES_PER_BATCH,
    MAX_METADATA_VALUE,
    MAX_REQUESTS_PER_BATCH,
    RECONCILE_MAX_PAGES,
    RECONCILE_SKEW,
    TAG_KEY,
    BatchState,
    apply_batch,
    failing_as,
)
from service.evaluations.generation.types import GenRequest
from service.providers.openai.client import no_retries
from service.providers.openai.paging import Listing

log = logging.getLogger(__name__)

INPUT_LOOKUP_PAGES = 20


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
    batches = Listing(
        lambda after: client.batches.list(limit=page_size, **({"after": after} if after else {})),
        what=f"batches (looking for {tag!r})",
        max_pages=max_pages,
    )
    for batch in batches:
        if (getattr(batch, "metadata", None) or {}).get(TAG_KEY) == tag:
            return batch
        created = getattr(batch, "created_at", None)
        if cutoff is not None and isinstance(created, int | float) and created < cutoff:
            return None
    return None


def find_input_file(client: openai.OpenAI, filename: str, size: int) -> str | None:
    """The id of an uploaded batch file named ``filename`` with ``size`` bytes (one a crashed run uploaded)."""
    files = Listing(
        lambda after: client.files.list(purpose="batch", order="desc", **({"after": after} if after else {})),
        what="batch files",
        max_pages=INPUT_LOOKUP_PAGES,
    )
    for f in files:
        if (
            getattr(f, "filename", None) == filename
            and getattr(f, "bytes", None) == size
            and getattr(f, "status", "processed") not in ("error", "deleted")
        ):
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
    meta = check_metadata({**(state.metadata if state else {}), **(metadata or {}), TAG_KEY: tag})
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
    with failing_as("listing batches", state):
        existing = find_batch(client, tag, since=since)
    if existing is not None:
        log.info("batch %s already exists for tag %s; adopting it", existing.id, tag)
        return apply_batch(state.model_copy(update={"reconciled": True}), existing)

    creator = no_retries(client)
    if state.input_file_id is None:
        assert state.input_filename is not None
        with failing_as("uploading the batch input", state):
            file_id = find_input_file(client, state.input_filename, len(content))
            if file_id is None:
                file_id = creator.files.create(file=(state.input_filename, content), purpose="batch").id
        state = state.model_copy(update={"input_file_id": file_id, "phase": "uploaded"})

    with failing_as("creating the batch", state):
        batch = creator.batches.create(
            input_file_id=state.input_file_id,  # type: ignore[arg-type]
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata=meta,
        )
    return apply_batch(state, batch)


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
