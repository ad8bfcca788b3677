"""Delivering one event to one endpoint: sign, send, log the attempt, schedule the retry or give up.

At least once: the event id is the ``webhook-id`` on every try, so receivers dedupe on it.
"""

from __future__ import annotations

import json
import logging
import threading

from service.clock import utcnow
from service.events.models import Event
from service.events.service import envelope
from service.settings import Settings, get_settings
from service.webhooks import service as endpoints
from service.webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint
from service.webhooks.schedule import DisablePolicy, failing_since_after, next_attempt_at
from service.webhooks.sender import DeliveryOutcome, Disposition, WebhookSender
from service.webhooks.signing import build_headers
from service.work import leased

log = logging.getLogger(__name__)

_senders: dict[tuple, WebhookSender] = {}
_lock = threading.Lock()


def sender_for(settings: Settings) -> WebhookSender:
    """One keep-alive sender per policy and process."""
    key = (tuple(settings.webhook_allowlist), settings.webhook_allow_http, settings.webhook_timeout_s)
    with _lock:
        s = _senders.get(key)
        if s is None:
            s = _senders[key] = WebhookSender(
                endpoints.policy(settings),
                timeout=settings.webhook_timeout_s,
                connect_timeout=settings.webhook_connect_timeout_s,
            )
        return s


def deliver(delivery_id: str, settings: Settings | None = None) -> DeliveryOutcome | None:
    settings = settings or get_settings()
    with leased(Delivery, delivery_id, lease_s=settings.webhook_timeout_s * 4 + 30) as got:
        if got is None:
            return None
        session, d = got
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
        started = utcnow()
        outcome = sender_for(settings).send(ep.url, headers, body)
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
        ep.failing_since = failing_since_after(ep.failing_since, now, succeeded=outcome.succeeded)
        if outcome.succeeded:
            d.status, d.next_run_at = "succeeded", None
            ep.exhausted_in_a_row = 0
        elif outcome.disposition is Disposition.GONE:
            d.status, d.next_run_at = "failed", None
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
        log.info(
            "webhook %s to %s attempt %d: %s %s",
            event.id,
            ep.id,
            d.attempt_count,
            outcome.disposition.value,
            outcome.status_code or outcome.error,
        )
        return outcome
