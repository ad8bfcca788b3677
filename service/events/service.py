"""The outbox: events are rows written in the caller's transaction, fanned out to endpoints by the worker."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session

from service.clock import utcnow
from service.events.models import Event
from service.work import names
from service.work.kind import WorkKind

_PENDING = "finetune_recorded_events"

# An event whose fan-out keeps failing has nothing to fail: after the bound the engine stops scheduling it, and its
# error stays on the row (``last_error``).
EVENTS = WorkKind("event", Event, names.FANOUT_EVENT)


def record(session: Session, project_id: str, type_: str, obj: dict[str, Any]) -> Event:
    """Write an event in the current transaction; it is delivered only if that transaction commits."""
    event = Event(project_id=project_id, type=type_, data={"object": obj}, next_run_at=utcnow())
    session.add(event)
    return event


@sa.event.listens_for(OrmSession, "after_flush")
def _note_recorded(session: OrmSession, _ctx: object) -> None:
    ids = [obj.id for obj in session.new if isinstance(obj, Event)]
    if ids:
        session.info.setdefault(_PENDING, []).extend(ids)


@sa.event.listens_for(OrmSession, "after_commit")
def _fan_out_committed(session: OrmSession) -> None:
    """Wake the fan-out as soon as the transaction that wrote an event commits, instead of at the sweeper's next
    pass. Only a wake-up: if the message is lost the sweeper still finds the event due."""
    ids = session.info.pop(_PENDING, None)
    if not ids:
        return
    from service.work.wake import wake

    for event_id in ids:
        wake(EVENTS, event_id)


@sa.event.listens_for(OrmSession, "after_rollback")
def _forget_rolled_back(session: OrmSession) -> None:
    session.info.pop(_PENDING, None)


def envelope(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }
