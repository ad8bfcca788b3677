"""The shape every creating POST shares: run once per Idempotency-Key, commit, then wake the worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from sqlmodel import Session

from service.api.deps import Caller
from service.idempotency.service import run_idempotent


def respond_created(
    session: Session,
    caller: Caller,
    *,
    idempotency_key: str | None,
    route: str,
    request_fingerprint: str,
    create: Callable[[], tuple[int, dict[str, Any]]],
    after_commit: Callable[[dict[str, Any]], None] | None = None,
) -> JSONResponse:
    """``after_commit`` (e.g. enqueue a task) runs only for a fresh create and only once the row is committed, so a
    worker never wakes for a row it cannot see yet."""
    status, body, replayed = run_idempotent(
        session,
        project_id=caller.project_id,
        key=idempotency_key,
        route=route,
        request_fingerprint=request_fingerprint,
        create=create,
    )
    # Rendered before the commit: an answer that cannot be sent (a value JSON cannot carry) raises here and the
    # request's transaction rolls back, rather than a 500 for an object that was saved anyway.
    response = JSONResponse(body, status_code=status)
    session.commit()
    if after_commit is not None and not replayed:
        after_commit(body)
    return response
