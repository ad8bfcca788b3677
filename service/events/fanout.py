"""Turn an outbox event into one delivery per subscribed, enabled endpoint, and run the service's own subscribers."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import select

from service.clock import utcnow
from service.events import subscribers
from service.events.service import EVENTS
from service.webhooks.models import Delivery, WebhookEndpoint
from service.work.lease import leased


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    types = endpoint.event_types or []
    return not types or event_type in types or any(t.endswith(".*") and event_type.startswith(t[:-1]) for t in types)


def fanout(event_id: str) -> list[str]:
    """Create the deliveries of one event (idempotent: one delivery per event and endpoint) and run its subscribers.
    Returns the ids of the deliveries created."""
    created: list[str] = []
    with leased(EVENTS, event_id) as got:
        if got is None:
            return created
        session, event = got
        subscribers.notify(session, event)
        endpoints = session.exec(
            select(WebhookEndpoint).where(
                WebhookEndpoint.project_id == event.project_id, WebhookEndpoint.status == "enabled"
            )
        )
        existing = set(session.exec(select(Delivery.endpoint_id).where(Delivery.event_id == event.id)))
        now = utcnow()
        for ep in endpoints:
            if ep.id in existing or not subscribed(ep, event.type):
                continue
            d = Delivery(project_id=event.project_id, event_id=event.id, endpoint_id=ep.id, next_run_at=now)
            session.add(d)
            created.append(d.id)
        event.next_run_at = None
        session.add(event)
        try:
            session.flush()
        except sa.exc.IntegrityError:
            session.rollback()
            raise
    return created
