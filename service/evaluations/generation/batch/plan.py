"""The batch input: one JSONL line per request, cut into parts a batch may hold, tagged for reconciliation."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping

from service.errors import InvalidInput
from service.evaluations.generation.batch.state import (
    ENDPOINT,
    FILENAME_PREFIX,
    MAX_BYTES_PER_BATCH,
    MAX_METADATA_KEY,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE,
    MAX_REQUESTS_PER_BATCH,
    TAG_KEY,
    BatchState,
)
from service.evaluations.generation.types import GenRequest


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
    meta = check_metadata({**(metadata or {}), TAG_KEY: tag})
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


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
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
