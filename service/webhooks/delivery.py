"""Delivering one event to one endpoint: sign, send, log the attempt, schedule the retry or give up.

At least once: the event id is the ``webhook-id`` on every try, so receivers dedupe on it.

The dispatcher (``service.webhooks.dispatch``) sends many deliveries at once: it builds each message with ``prepare``
and records what came of it with ``record_outcome``, so the rules for attempts, retries and disabling live here only.
``DELIVERIES`` is the work kind of the delivery rows (``service.work``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from service import metrics
from service.clock import utcnow
from service.events.models import Event
from service.events.service import envelope
from service.settings import Settings
from service.webhooks import service as endpoints
from service.webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint
from service.webhooks.schedule import DisablePolicy, failing_since_after, next_attempt_at
from service.webhooks.sender import DeliveryOutcome, Disposition
from service.webhooks.signing import build_headers
from service.work import names
from service.work.kind import StepFailure, WorkKind

log = logging.getLogger(__name__)


def _give_up(session: Session, d: Delivery, failure: StepFailure) -> None:
    """A delivery whose sending keeps raising (not an HTTP failure: those follow the retry schedule in
    ``record_outcome``) ends as deliveries that ran out of retries do, with the error in its attempt log."""
    d.status = "failed"
    session.add(DeliveryAttempt(delivery_id=d.id, attempt=d.attempt_count, error=failure.message[:500]))
    ep = session.get(WebhookEndpoint, d.endpoint_id)
    if ep is not None:
        ep.exhausted_in_a_row += 1
        session.add(ep)


# One ``webhooks.dispatch`` task serves every due delivery (``service.webhooks.dispatch``).
DELIVERIES = WorkKind(
    "delivery", Delivery, names.DISPATCH_WEBHOOKS, queue=names.WEBHOOKS_QUEUE, batched=True, give_up=_give_up
)


def lease_seconds(settings: Settings) -> float:
    """How long a sender owns a delivery row: the whole exchange (connect + response, bounded by the sender) with
    room to spare for recording it, so a live sender never loses its row and a dead one's row comes back soon."""
    return settings.webhook_timeout_s * 4 + 30


@dataclass(frozen=True)
class Message:
    """A signed webhook ready to send for one delivery."""

    delivery_id: str
    endpoint_id: str
    event_id: str
    url: str
    headers: dict[str, str]
    body: bytes


def prepare(session: Session, settings: Settings, d: Delivery) -> Message | None:
    """The message to send for a leased delivery, or None when there is nothing to send.

    In the None case the delivery has been settled in ``session`` (no longer due; failed if its endpoint is disabled)
    and the caller only commits.
    """
    ep = session.get(WebhookEndpoint, d.endpoint_id)
    event = session.get(Event, d.event_id)
    if ep is None or event is None or d.status != "pending":
        d.next_run_at = None
        return None
    if ep.status != "enabled":
        d.status, d.next_run_at = "failed", None
        session.add(DeliveryAttempt(delivery_id=d.id, attempt=d.attempt_count, error=f"endpoint {ep.status}"))
        return None
    body = json.dumps(envelope(event), separators=(",", ":")).encode()
    headers = build_headers(endpoints.signing_secrets(settings, ep), event.id, body)
    return Message(d.id, ep.id, event.id, ep.url, dict(headers), body)


def record_outcome(session: Session, d: Delivery, outcome: DeliveryOutcome, started: datetime) -> None:
    """Log the attempt and decide what comes next: done, retry on the schedule (honouring ``retry-after``), or give
    up; 410 disables the endpoint at once, and an endpoint failing for days (or exhausting event after event) is
    disabled with an ``endpoint.disabled`` event. The caller commits."""
    # Deliveries of one endpoint finish concurrently; the endpoint's counters are read-modify-write, so read them
    # fresh under a row lock (PostgreSQL; SQLite serialises writers anyway) rather than from before the send.
    ep = session.get(WebhookEndpoint, d.endpoint_id, with_for_update=True, populate_existing=True)
    event = session.get(Event, d.event_id)
    if ep is None or event is None:  # deleted while we were sending: nothing left to record against
        d.next_run_at = None
        return
    d.attempt_count += 1
    d.last_status_code = outcome.status_code
    session.add(
        DeliveryAttempt(
            delivery_id=d.id,
            attempt=d.attempt_count,
            started_at=started,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            response_excerpt=outcome.response_excerpt,
            error=outcome.error,
            details={"disposition": outcome.disposition.value, "remote_address": outcome.remote_address},
        )
    )
    now = utcnow()
    lag_s = (now - event.created_at).total_seconds() if outcome.succeeded else None
    metrics.record_delivery(outcome.disposition.value, lag_s)
    ep.failing_since = failing_since_after(ep.failing_since, now, succeeded=outcome.succeeded)
    if outcome.succeeded:
        d.status, d.next_run_at = "succeeded", None
        ep.exhausted_in_a_row = 0
    elif outcome.disposition is Disposition.GONE:
        d.status, d.next_run_at = "failed", None
        if ep.status == "enabled":
            endpoints.disable(session, ep, "the receiver answered 410 Gone")
    else:
        nxt = next_attempt_at(d.attempt_count, now, outcome.retry_after_s)
        if nxt is None:
            d.status, d.next_run_at = "failed", None
            ep.exhausted_in_a_row += 1
        else:
            d.next_run_at = nxt
        reason = DisablePolicy().disable_reason(ep.failing_since, now, ep.exhausted_in_a_row)
        if reason and ep.status == "enabled":
            endpoints.disable(session, ep, reason)
    session.add(ep)
    session.add(d)
    log.info(
        "webhook %s to %s attempt %d: %s %s",
        event.id,
        ep.id,
        d.attempt_count,
        outcome.disposition.value,
        outcome.status_code or outcome.error,
    )
