"""Idempotency-Key support for creating POSTs: the first answer is stored and replayed for the same key.

A key reused with a different request is a client bug and gets a 409 rather than silently answering another request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from service.clock import utcnow
from service.errors import Conflict
from service.idempotency.models import IdempotencyRecord

RETENTION = timedelta(hours=24)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


_PURPOSE = "idempotency-response"


def _seal(project_id: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """Stored answers are encrypted: some carry a secret shown once (a webhook endpoint's signing secret)."""
    from service.secrets import encrypt_secret
    from service.settings import get_settings

    plain = json.dumps(body, separators=(",", ":"))
    return {"sealed": encrypt_secret(get_settings(), plain, purpose=_PURPOSE, context=f"{project_id}/{key}")}


def _unseal(record: IdempotencyRecord) -> dict[str, Any]:
    if set(record.response) != {"sealed"}:
        return record.response  # stored before answers were sealed
    from service.secrets import decrypt_secret
    from service.settings import get_settings

    context = f"{record.project_id}/{record.key}"
    return json.loads(decrypt_secret(get_settings(), record.response["sealed"], purpose=_PURPOSE, context=context))


def run_idempotent(
    session: Session,
    *,
    project_id: str,
    key: str | None,
    route: str,
    request_fingerprint: str,
    create: Callable[[], tuple[int, dict[str, Any]]],
) -> tuple[int, dict[str, Any], bool]:
    """Return ``(status, body, replayed)``. ``create`` runs at most once per key (within the retention window)."""
    if not key:
        status, body = create()
        return status, body, False
    existing = session.get(IdempotencyRecord, (project_id, key))
    if existing is not None and existing.created_at > utcnow() - RETENTION:
        if existing.route != route or existing.fingerprint != request_fingerprint:
            raise Conflict(
                "this Idempotency-Key was already used with a different request", code="idempotency_key_reused"
            )
        return existing.status_code, _unseal(existing), True
    if existing is not None:
        session.delete(existing)
        session.flush()
    status, body = create()
    session.add(
        IdempotencyRecord(
            project_id=project_id,
            key=key,
            route=route,
            fingerprint=request_fingerprint,
            status_code=status,
            response=_seal(project_id, key, body),
        )
    )
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:
        # A concurrent request with the same key won the race; its transaction holds the answer.
        raise Conflict(
            "a request with this Idempotency-Key is in progress; retry", code="idempotency_key_in_use"
        ) from exc
    return status, body, False
