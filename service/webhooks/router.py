from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from sqlmodel import select

from api_schemas.common import Deleted, Page, problem_responses
from api_schemas.webhooks import (
    DeliveryAttemptOut,
    RedeliverOut,
    WebhookEndpointCreate,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)
from service.api.creating import respond_created
from service.api.deps import CallerDep, IdempotencyKey, SessionDep, SettingsDep
from service.api.pagination import PageParams, page_params, paginate, select_for_project
from service.events.models import Event
from service.events.service import EVENTS
from service.idempotency.service import fingerprint
from service.webhooks import dispatch, service
from service.webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint
from service.work.wake import wake as wake_kind

router = APIRouter(tags=["webhooks"])


def endpoint_out(ep: WebhookEndpoint) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        id=ep.id,
        url=ep.url,
        description=ep.description,
        event_types=ep.event_types,
        status=ep.status,
        disabled_reason=ep.disabled_reason,
        failing_since=ep.failing_since,
        previous_secret_expires_at=ep.previous_secret_expires_at,
        created_at=ep.created_at,
        updated_at=ep.updated_at,
    )


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=WebhookEndpointWithSecret,
    responses=problem_responses(401, 409, 422),
    summary="Register an endpoint; the signing secret is returned once",
)
def create_endpoint(
    body: WebhookEndpointCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    def create() -> tuple[int, dict]:
        ep, secret = service.create_endpoint(session, settings, caller.project_id, body)
        return 201, WebhookEndpointWithSecret(**endpoint_out(ep).model_dump(), secret=secret).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/webhook-endpoints",
        request_fingerprint=fingerprint(body.model_dump(mode="json")),
        create=create,
    )


@router.get("/webhook-endpoints", response_model=Page[WebhookEndpointOut], responses=problem_responses(401))
def list_endpoints(
    caller: CallerDep, session: SessionDep, page: PageParams = Depends(page_params)
) -> Page[WebhookEndpointOut]:
    return paginate(
        session, select_for_project(WebhookEndpoint, caller.project_id), WebhookEndpoint, page, endpoint_out
    )


@router.get(
    "/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpointOut, responses=problem_responses(401, 404)
)
def get_endpoint(endpoint_id: str, caller: CallerDep, session: SessionDep) -> WebhookEndpointOut:
    return endpoint_out(service.get_endpoint(session, caller.project_id, endpoint_id))


@router.patch(
    "/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpointOut, responses=problem_responses(401, 404, 422)
)
def update_endpoint(
    endpoint_id: str, body: WebhookEndpointUpdate, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> WebhookEndpointOut:
    return endpoint_out(service.update_endpoint(session, settings, caller.project_id, endpoint_id, body))


@router.delete("/webhook-endpoints/{endpoint_id}", response_model=Deleted, responses=problem_responses(401, 404))
def delete_endpoint(endpoint_id: str, caller: CallerDep, session: SessionDep) -> Deleted:
    session.delete(service.get_endpoint(session, caller.project_id, endpoint_id))
    return Deleted(id=endpoint_id, object="webhook_endpoint")


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=WebhookEndpointWithSecret,
    responses=problem_responses(401, 404),
    summary="New secret; the old one also signs for 24 h",
)
def rotate_secret(
    endpoint_id: str,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    # A retried rotation must not rotate twice: the secret of the first would be lost with its answer.
    def create() -> tuple[int, dict]:
        ep, secret = service.rotate_secret(session, settings, caller.project_id, endpoint_id)
        return 200, WebhookEndpointWithSecret(**endpoint_out(ep).model_dump(), secret=secret).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route=f"POST /v1/webhook-endpoints/{endpoint_id}/rotate-secret",
        request_fingerprint=fingerprint(endpoint_id),
        create=create,
    )


@router.post(
    "/webhook-endpoints/{endpoint_id}/test",
    status_code=202,
    response_model=RedeliverOut,
    responses=problem_responses(401, 404),
    summary="Send a ping event",
)
def test_endpoint(
    endpoint_id: str,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    def create() -> tuple[int, dict]:
        d = service.send_test(session, caller.project_id, endpoint_id)
        return 202, RedeliverOut(event_id=d.event_id, deliveries=[d.id]).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route=f"POST /v1/webhook-endpoints/{endpoint_id}/test",
        request_fingerprint=fingerprint(endpoint_id),
        create=create,
        after_commit=lambda _: dispatch.wake(settings),
    )


def attempt_out(a: DeliveryAttempt, d: Delivery, ev: Event) -> DeliveryAttemptOut:
    return DeliveryAttemptOut(
        id=a.id,
        delivery_id=d.id,
        event_id=ev.id,
        event_type=ev.type,
        attempt=a.attempt,
        started_at=a.started_at,
        duration_ms=a.duration_ms,
        status_code=a.status_code,
        response_excerpt=a.response_excerpt,
        error=a.error,
        details=a.details,
    )


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=Page[DeliveryAttemptOut],
    responses=problem_responses(401, 404),
    summary="Every delivery attempt to this endpoint, newest first",
)
def list_attempts(
    endpoint_id: str,
    caller: CallerDep,
    session: SessionDep,
    limit: int = Query(20, ge=1, le=100),
    after: int | None = Query(None, description="Cursor: `next_cursor` of the previous page."),
) -> Page[DeliveryAttemptOut]:
    ep = service.get_endpoint(session, caller.project_id, endpoint_id)
    stmt = (
        select(DeliveryAttempt, Delivery, Event)
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.endpoint_id == ep.id)
    )
    if after is not None:
        stmt = stmt.where(DeliveryAttempt.id < after)
    rows = list(session.exec(stmt.order_by(DeliveryAttempt.id.desc()).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page[DeliveryAttemptOut](
        data=[attempt_out(a, d, e) for a, d, e in rows],
        has_more=has_more,
        next_cursor=str(rows[-1][0].id) if has_more else None,
    )


@router.post(
    "/events/{event_id}/redeliver",
    status_code=202,
    response_model=RedeliverOut,
    responses=problem_responses(401, 404),
    summary="Send an event again",
)
def redeliver(
    event_id: str,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    endpoint_id: str | None = Query(None, description="Only to this endpoint."),
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    def create() -> tuple[int, dict]:
        deliveries = service.redeliver(session, caller.project_id, event_id, endpoint_id)
        return 202, RedeliverOut(event_id=event_id, deliveries=[d.id for d in deliveries]).model_dump(mode="json")

    def wake(body: dict) -> None:
        if body["deliveries"]:
            dispatch.wake(settings)
        else:
            wake_kind(EVENTS, event_id)

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route=f"POST /v1/events/{event_id}/redeliver",
        request_fingerprint=fingerprint(event_id, endpoint_id),
        create=create,
        after_commit=wake,
    )
