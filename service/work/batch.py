"""Many rows at once: which rows are due, and claiming a batch of them for one owner (the webhook dispatcher)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import Session

from service.clock import utcnow
from service.work.kind import WorkKind
from service.work.lease import due_conditions

T = TypeVar("T")


def due_rows(session: Session, kind: WorkKind, limit: int = 500) -> list[tuple[str, str]]:
    """(id, queue) of the rows of ``kind`` that are due and not held by a live lease (including rows whose worker
    died)."""
    model = kind.model
    queue_col = getattr(model, kind.queue_column) if kind.queue_column else sa.literal(kind.queue)
    stmt = sa.select(model.id, queue_col).where(*due_conditions(model, utcnow())).order_by(model.next_run_at).limit(limit)
    return [(row_id, row_queue or kind.queue) for row_id, row_queue in session.execute(stmt)]


def claim_batch(
    session: Session,
    kind: WorkKind,
    owner: str,
    limit: int,
    *,
    lease_s: float,
    make: Callable[..., T],
    row_id: Callable[[T], str],
    columns: Sequence[Any] = (),
    joins: Sequence[tuple[Any, Any]] = (),
    where: Sequence[Any] = (),
    window: int | None = None,
    pick: Callable[[list[T]], list[T]] | None = None,
) -> tuple[list[T], list[T]]:
    """Lease up to ``limit`` due rows of ``kind`` to ``owner`` in ``session`` (the caller commits).

    Looks at ``window`` due rows (oldest first; ``limit`` by default), each selected as ``id, *columns`` (through
    ``joins``, filtered by ``where``) and built with ``make(*row)``; ``pick`` chooses which of them to take (the first
    ``limit`` by default), the rest stay free. Returns (claimed, seen): the rows now leased to ``owner``, and every
    candidate looked at.
    """
    model = kind.model
    now = utcnow()
    stmt = sa.select(model.id, *columns)
    for target, onclause in joins:
        stmt = stmt.join(target, onclause)
    stmt = stmt.where(*due_conditions(model, now), *where).order_by(model.next_run_at).limit(window or limit)
    # PostgreSQL: concurrent claimers skip each other's candidate rows instead of queueing on them. SQLite has no row
    # locks (and ignores this); its writers are serialised and the conditional update below decides.
    stmt = stmt.with_for_update(skip_locked=True, of=model)
    seen = [make(*row) for row in session.execute(stmt)]
    chosen = seen[:limit] if pick is None else pick(seen)
    if not chosen:
        return [], seen
    ids = [row_id(c) for c in chosen]
    session.execute(
        sa.update(model)
        .where(model.id.in_(ids), *due_conditions(model, now))
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    mine = set(session.scalars(sa.select(model.id).where(model.id.in_(ids), model.lease_owner == owner)))
    return [c for c in chosen if row_id(c) in mine], seen
