"""Waking a row: send its kind's task to the right queue. Only a wake-up: if the message is lost, the sweeper finds the
row due in the database."""

from __future__ import annotations

import sqlalchemy as sa

from service import queue as broker
from service.db import session_scope
from service.work.kind import WorkKind


def row_queue(kind: WorkKind, row_id: str) -> str:
    """The queue that runs this row: its own column when the kind has one, else the kind's."""
    if kind.queue_column is None:
        return kind.queue
    with session_scope() as s:
        value = s.scalar(sa.select(getattr(kind.model, kind.queue_column)).where(kind.model.id == row_id))
    return value or kind.queue


def wake(kind: WorkKind, row_id: str | None = None, *, queue: str | None = None) -> bool:
    """Enqueue the task that advances ``row_id`` (a batched kind's task serves every due row and takes no id).
    ``queue``: the row's queue when the caller already knows it (saves a read)."""
    if kind.batched:
        return broker.enqueue(kind.task, queue=kind.queue)
    if row_id is None:
        raise ValueError(f"waking a {kind.name} needs its id")
    return broker.enqueue(kind.task, row_id, queue=queue or row_queue(kind, row_id))
