"""The outbox: events are rows written in the caller's transaction, fanned out to endpoints by the worker."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from service.clock import utcnow
from service.events.models import Event


def record(session: Session, project_id: str, type_: str, obj: dict[str, Any]) -> Event:
    """Write an event in the current transaction; it is delivered only if that transaction commits."""
    event = Event(project_id=project_id, type=type_, data={"object": obj}, next_run_at=utcnow())
    session.add(event)
    return event


def envelope(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }
