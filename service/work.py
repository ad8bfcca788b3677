"""Leases on work items: how a worker takes one row, does one step, and gives it back.

A task never trusts its queue message: it claims the row only if the row is due (``next_run_at <= now``) and nobody holds
a live lease. Duplicate or stale messages therefore do nothing, and a worker that dies leaves a lease that expires, after
which the sweeper sends the row out again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from service.clock import utcnow
from service.db import get_engine, session_scope
from service.settings import get_settings

log = logging.getLogger(__name__)

# Backoff after a step raised: attempt n waits BACKOFF[min(n, len-1)] seconds.
BACKOFF_S = (5, 15, 60, 300, 900, 1800)


@dataclass(frozen=True)
class WorkKind:
    """A table whose rows the sweeper watches, and the task that advances one row."""

    name: str
    model: Any
    task: str
    queue: str = "default"
    # A column naming the queue of each row (it overrides ``queue``): rows of one kind may need different workers.
    queue_column: str | None = None
    # The task takes no row id and serves every due row (a dispatcher): the sweeper sends it once, not once per row.
    batched: bool = False


class Lease:
    def __init__(self, model: Any, row_id: str, owner: str, lease_s: float) -> None:
        self.model, self.row_id, self.owner, self.lease_s = model, row_id, owner, lease_s

    def renew(self) -> bool:
        """Extend the lease (long steps call this as a heartbeat). False if it was lost to another worker."""
        now = utcnow()
        with session_scope() as s:
            res = s.execute(
                sa.update(self.model)
                .where(self.model.id == self.row_id, self.model.lease_owner == self.owner)
                .values(lease_expires_at=now + timedelta(seconds=self.lease_s))
            )
            return res.rowcount == 1


def claim(model: Any, row_id: str, *, lease_s: float | None = None, force: bool = False) -> Lease | None:
    """Take the row if it is due and free. ``force`` ignores ``next_run_at`` (still respects live leases)."""
    lease_s = lease_s or get_settings().lease_s
    now = utcnow()
    owner = uuid.uuid4().hex
    conditions = [
        model.id == row_id,
        sa.or_(model.lease_expires_at.is_(None), model.lease_expires_at < now),
    ]
    if not force:
        conditions += [model.next_run_at.is_not(None), model.next_run_at <= now]
    with session_scope() as s:
        res = s.execute(
            sa.update(model)
            .where(*conditions)
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s))
        )
        if res.rowcount != 1:
            return None
    return Lease(model, row_id, owner, lease_s)


@contextmanager
def leased(
    model: Any, row_id: str, *, lease_s: float | None = None, force: bool = False
) -> Iterator[tuple[Session, Any] | None]:
    """Claim a row and yield ``(session, row)``; on exit commit and release, or on error back off and release.

    The body sets ``row.next_run_at`` to when the row next needs a worker (None: nothing more to do).
    """
    lease = claim(model, row_id, lease_s=lease_s, force=force)
    if lease is None:
        yield None
        return
    session = Session(get_engine(), expire_on_commit=False)
    try:
        row = session.get(model, row_id)
        if row is None:
            yield None
            return
        try:
            yield session, row
        except Exception as exc:
            session.rollback()
            _release_after_error(model, row_id, lease.owner, exc)
            raise
        if hasattr(row, "updated_at"):
            row.updated_at = utcnow()
        session.add(row)
        session.flush()
        # Release only if the lease is still ours: a worker whose lease expired mid-step must not overwrite the
        # work of the one that took over.
        res = session.execute(
            sa.update(model)
            .where(model.id == row_id, model.lease_owner == lease.owner)
            .values(lease_owner=None, lease_expires_at=None, attempts=0, last_error=None)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            session.rollback()
            log.warning("lease on %s %s lost before commit; step discarded", model.__tablename__, row_id)
            return
        session.commit()
    finally:
        session.close()


def _release_after_error(model: Any, row_id: str, owner: str, exc: Exception) -> None:
    with session_scope() as s:
        row = s.get(model, row_id)
        if row is None or row.lease_owner != owner:
            return
        row.attempts += 1
        delay = BACKOFF_S[min(row.attempts - 1, len(BACKOFF_S) - 1)]
        row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        row.lease_owner = None
        row.lease_expires_at = None
        row.next_run_at = utcnow() + timedelta(seconds=delay)
        s.add(row)
    log.exception(
        "step on %s %s failed (attempt %s); retrying in %ss", model.__tablename__, row_id, row.attempts, delay
    )


def due_rows(session: Session, kind: WorkKind, limit: int = 500) -> list[tuple[str, str]]:
    """(id, queue) of the rows of ``kind`` that are due and not held by a live lease (including rows whose worker
    died)."""
    model = kind.model
    now = utcnow()
    queue_col = getattr(model, kind.queue_column) if kind.queue_column else sa.literal(kind.queue)
    stmt = (
        sa.select(model.id, queue_col)
        .where(model.next_run_at.is_not(None), model.next_run_at <= now)
        .where(sa.or_(model.lease_expires_at.is_(None), model.lease_expires_at < now))
        .order_by(model.next_run_at)
        .limit(limit)
    )
    return [(row_id, row_queue or kind.queue) for row_id, row_queue in session.execute(stmt)]


def release(model: Any, row_id: str, owner: str) -> bool:
    """Give a lease back after work done outside ``leased`` (long runs that commit as they go)."""
    with session_scope() as s:
        res = s.execute(
            sa.update(model)
            .where(model.id == row_id, model.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None, attempts=0, last_error=None)
        )
        return res.rowcount == 1


def back_off(model: Any, row_id: str, owner: str, exc: Exception) -> None:
    """Release after a failed step with a growing delay (what ``leased`` does on error)."""
    _release_after_error(model, row_id, owner, exc)
