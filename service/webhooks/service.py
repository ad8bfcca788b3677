"""Webhook endpoints of a project: registration behind the outbound policy, secrets shown once and rotated with overlap."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from api_schemas.events import EventType
from api_schemas.webhooks import WebhookEndpointCreate, WebhookEndpointUpdate
from service.clock import utcnow
from service.errors import InvalidInput
from service.events import service as events
from service.events.models import Event
from service.net import allowed_url, outbound_policy
from service.secrets import decrypt_secret, encrypt_secret
from service.settings import Settings
from service.tenancy import get_owned
from service.webhooks.models import Delivery, WebhookEndpoint
from service.webhooks.signing import generate_secret

PURPOSE = "webhook-secrets"
ROTATION_OVERLAP = timedelta(hours=24)
KNOWN_TYPES = {t.value for t in EventType}


def _check_url(settings: Settings, url: str) -> str:
    return allowed_url(url, field="url", policy=outbound_policy(settings))


def _check_types(types: list[str]) -> list[str]:
    for t in types:
        if t not in KNOWN_TYPES and not (t.endswith(".*") and any(k.startswith(t[:-1]) for k in KNOWN_TYPES)):
            raise InvalidInput(
                f"unknown event type {t!r}; known: {', '.join(sorted(KNOWN_TYPES))}", code="unknown_event_type"
            )
    return sorted(set(types))


def get_endpoint(session: Session, project_id: str, endpoint_id: str) -> WebhookEndpoint:
    return get_owned(session, WebhookEndpoint, endpoint_id, project_id, "webhook_endpoint")


def create_endpoint(
    session: Session, settings: Settings, project_id: str, req: WebhookEndpointCreate
) -> tuple[WebhookEndpoint, str]:
    secret = generate_secret()
    ep = WebhookEndpoint(
        project_id=project_id,
        url=_check_url(settings, req.url),
        description=req.description,
        event_types=_check_types(req.event_types),
        secret_ciphertext="",
    )
    ep.secret_ciphertext = encrypt_secret(settings, secret, purpose=PURPOSE, context=ep.id)
    session.add(ep)
    session.flush()
    return ep, secret


def update_endpoint(
    session: Session, settings: Settings, project_id: str, endpoint_id: str, req: WebhookEndpointUpdate
) -> WebhookEndpoint:
    ep = get_endpoint(session, project_id, endpoint_id)
    if req.url is not None:
        ep.url = _check_url(settings, req.url)
    if req.event_types is not None:
        ep.event_types = _check_types(req.event_types)
    if req.description is not None:
        ep.description = req.description
    if req.enabled is True:
        ep.status, ep.disabled_reason, ep.failing_since, ep.exhausted_in_a_row = "enabled", None, None, 0
    elif req.enabled is False:
        ep.status, ep.disabled_reason = "disabled", "disabled by the user"
    ep.updated_at = utcnow()
    session.add(ep)
    return ep


def rotate_secret(
    session: Session, settings: Settings, project_id: str, endpoint_id: str
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the old one keeps signing (beside the new) for 24 h so receivers can switch without a gap."""
    ep = get_endpoint(session, project_id, endpoint_id)
    secret = generate_secret()
    ep.previous_secret_ciphertext = ep.secret_ciphertext
    ep.previous_secret_expires_at = utcnow() + ROTATION_OVERLAP
    ep.secret_ciphertext = encrypt_secret(settings, secret, purpose=PURPOSE, context=ep.id)
    ep.updated_at = utcnow()
    session.add(ep)
    return ep, secret


def signing_secrets(settings: Settings, ep: WebhookEndpoint) -> list[str]:
    secrets = [decrypt_secret(settings, ep.secret_ciphertext, purpose=PURPOSE, context=ep.id)]
    if ep.previous_secret_ciphertext and ep.previous_secret_expires_at and ep.previous_secret_expires_at > utcnow():
        secrets.append(decrypt_secret(settings, ep.previous_secret_ciphertext, purpose=PURPOSE, context=ep.id))
    return secrets


def send_test(session: Session, project_id: str, endpoint_id: str) -> Delivery:
    """A ``ping`` event delivered to this endpoint only."""
    ep = get_endpoint(session, project_id, endpoint_id)
    ev = Event(project_id=project_id, type=EventType.ping, data={"object": {"endpoint_id": ep.id}})
    session.add(ev)
    session.flush()
    d = Delivery(project_id=project_id, event_id=ev.id, endpoint_id=ep.id, next_run_at=utcnow())
    session.add(d)
    session.flush()
    return d


def redeliver(session: Session, project_id: str, event_id: str, endpoint_id: str | None = None) -> list[Delivery]:
    """Send an event again (to one endpoint or all its deliveries): a fresh schedule, the same webhook-id."""
    ev = get_owned(session, Event, event_id, project_id, "event")
    now = utcnow()
    stmt = select(Delivery).where(Delivery.event_id == ev.id)
    if endpoint_id:
        get_endpoint(session, project_id, endpoint_id)
        stmt = stmt.where(Delivery.endpoint_id == endpoint_id)
    deliveries = list(session.exec(stmt))
    if endpoint_id and not deliveries:
        deliveries = [Delivery(project_id=project_id, event_id=ev.id, endpoint_id=endpoint_id)]
    if not deliveries:
        # Never fanned out (no endpoint subscribed at the time): fan out again to the current endpoints.
        ev.next_run_at = now
        session.add(ev)
        return []
    for d in deliveries:
        d.status, d.attempt_count, d.next_run_at = "pending", 0, now
        session.add(d)
    session.flush()
    return deliveries


def disable(session: Session, ep: WebhookEndpoint, reason: str) -> None:
    ep.status, ep.disabled_reason, ep.updated_at = "disabled", reason, utcnow()
    session.add(ep)
    events.record(
        session,
        ep.project_id,
        EventType.endpoint_disabled,
        {"object": "webhook_endpoint", "id": ep.id, "url": ep.url, "disabled_reason": reason},
    )
