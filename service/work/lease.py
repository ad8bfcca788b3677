"""Leases on work rows: how a worker takes one row, does one step, and gives it back.

A task never trusts its queue message: it claims the row only if the row is due (``next_run_at <= now``) and nobody holds
a live lease. Duplicate or stale messages therefore do nothing, and a worker that dies leaves a lease that expires, after
which the sweeper sends the row out again.

A step that fails (raises, or records a failure it handled itself) counts one attempt and backs off on the schedule in
``service.work.backoff``; after ``max_step_attempts`` failures in a row the kind's ``give_up`` fails the object with
the last error, and a step that fails while a cancel is pending ends the object cancelled instead. A step that succeeds
sets the count back to zero; the last error and its time stay on the row for the API.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from service.clock import utcnow
from service.db import get_engine, session_scope
from service.settings import get_settings
from service.work import backoff
from service.work.kind import StepFailure, WorkKind

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def error_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


class Lease:
    """A live claim on one row by one owner."""

    def __init__(self, kind: WorkKind, row_id: str, owner: str, lease_s: float) -> None:
        self.kind, self.row_id, self.owner, self.lease_s = kind, row_id, owner, lease_s

    def renew(self) -> bool:
        """Extend the lease (long steps call this as a heartbeat). False if it was lost to another worker."""
        model = self.kind.model
        with session_scope() as s:
            res = s.execute(
                sa.update(model)
                .where(model.id == self.row_id, model.lease_owner == self.owner)
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_s))
            )
            return res.rowcount == 1

    def release(self) -> bool:
        """Give the lease back after a step that committed its own work (long runs that save as they go): the step
        succeeded, so its failure count starts again. False if the lease had been lost."""
        model = self.kind.model
        with session_scope() as s:
            res = s.execute(
                sa.update(model)
                .where(model.id == self.row_id, model.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None, attempts=0)
            )
            return res.rowcount == 1

    def back_off(self, exc: BaseException) -> None:
        """The step raised: count the attempt and give the lease back (see the module docstring)."""
        back_off(self.kind, self.row_id, self.owner, exc)


def due_conditions(model: Any, now: Any) -> list[Any]:
    return [
        model.next_run_at.is_not(None),
        model.next_run_at <= now,
        sa.or_(model.lease_expires_at.is_(None), model.lease_expires_at < now),
    ]


def claim(kind: WorkKind, row_id: str, *, lease_s: float | None = None, force: bool = False) -> Lease | None:
    """Take the row if it is due and free. ``force`` ignores ``next_run_at`` (still respects live leases)."""
    model = kind.model
    lease_s = lease_s or get_settings().lease_s
    now = utcnow()
    owner = uuid.uuid4().hex
    conditions = [model.id == row_id, sa.or_(model.lease_expires_at.is_(None), model.lease_expires_at < now)]
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
    return Lease(kind, row_id, owner, lease_s)


def commit_and_release(session: Session, kind: WorkKind, row: Any, owner: str) -> bool:
    """Commit the row's new state and give its lease back, only if the lease is still ours: a worker whose lease ran
    out mid-step must not overwrite the work of the one that took the row over. False (and rolled back) if it was lost.
    """
    model = kind.model
    if hasattr(row, "updated_at"):
        row.updated_at = utcnow()
    session.add(row)
    session.flush()
    res = session.execute(
        sa.update(model)
        .where(model.id == row.id, model.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        session.rollback()
        log.warning("lease on %s %s lost before commit; step discarded", model.__tablename__, row.id)
        return False
    session.commit()
    return True


def record_failure(
    session: Session,
    kind: WorkKind,
    row: Any,
    message: str,
    *,
    retry_after: float | None = None,
    scale: float = 1.0,
) -> bool:
    """Count a failed attempt on a row the caller holds, in the caller's transaction: keep the error, schedule the next
    try, or give the object up after the bound. Returns True when it gave up.

    For steps that handle an error themselves and still want to commit what they did before it (a provider that
    answered 503 after our files were recorded); ``leased`` does the same for a step that raises.
    """
    now = utcnow()
    row.attempts = (row.attempts or 0) + 1
    row.last_error = message[:MAX_ERROR_CHARS]
    row.last_error_at = now
    limit = backoff.max_attempts()
    if row.attempts >= limit:
        # Bounded for every kind: one without ``give_up`` just stops being scheduled, its error kept on the row.
        if kind.give_up is not None:
            kind.give_up(session, row, StepFailure(row.last_error, row.attempts))
        row.next_run_at = None
        log.error("%s %s failed %d times in a row; giving up: %s", kind.name, row.id, row.attempts, message)
        return True
    delay = backoff.delay_s(row.attempts, scale=scale, retry_after=retry_after)
    row.next_run_at = now + timedelta(seconds=delay)
    log.warning("%s %s step failed (attempt %d); retrying in %.1fs: %s", kind.name, row.id, row.attempts, delay, message)
    return False


def back_off(kind: WorkKind, row_id: str, owner: str, exc: BaseException) -> None:
    """Release a row whose step raised: cancel it if a cancel is pending and the kind can, else count the attempt
    (``record_failure``). Nothing happens if the lease is no longer ``owner``'s."""
    message = error_message(exc)
    with session_scope() as s:
        row = s.get(kind.model, row_id)
        if row is None or row.lease_owner != owner:
            return
        if kind.cancel is not None and kind.cancel_requested is not None and kind.cancel_requested(row):
            row.last_error, row.last_error_at = message, utcnow()
            kind.cancel(s, row, message)
            row.next_run_at = None
            log.warning("%s %s: step failed with a cancel pending; cancelled: %s", kind.name, row_id, message)
        else:
            record_failure(s, kind, row, message)
        row.lease_owner = None
        row.lease_expires_at = None
        if hasattr(row, "updated_at"):
            row.updated_at = utcnow()
        s.add(row)
    log.debug("step on %s %s raised", kind.name, row_id, exc_info=exc)


@contextmanager
def leased(
    kind: WorkKind, row_id: str, *, lease_s: float | None = None, force: bool = False
) -> Iterator[tuple[Session, Any] | None]:
    """Claim a row and yield ``(session, row)``; on exit commit and release, or on error roll back and ``back_off``.

    The body sets ``row.next_run_at`` to when the row next needs a worker (None: nothing more to do). A body that
    handled a failure itself calls ``record_failure``; otherwise a step that returns has succeeded and the row's
    failure count starts again.
    """
    lease = claim(kind, row_id, lease_s=lease_s, force=force)
    if lease is None:
        yield None
        return
    session = Session(get_engine(), expire_on_commit=False)
    try:
        row = session.get(kind.model, row_id)
        if row is None:
            yield None
            return
        attempts_before = row.attempts
        try:
            yield session, row
        except Exception as exc:
            session.rollback()
            back_off(kind, row_id, lease.owner, exc)
            raise
        if row.attempts <= attempts_before:
            row.attempts = 0
        commit_and_release(session, kind, row, lease.owner)
    finally:
        session.close()
