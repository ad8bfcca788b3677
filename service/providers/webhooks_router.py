"""Webhooks from providers to us. They only make the affected row due at once; the worker then fetches the truth
from the provider, so a forged, replayed or out-of-order webhook can at worst cause one extra poll."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request

from api_schemas.common import problem_responses
from service import queue
from service.api.deps import SessionDep, SettingsDep
from service.errors import InvalidInput, Unauthorized, Unavailable
from service.jobs import service as jobs
from service.webhooks.signing import WebhookSecretError, WebhookVerificationError, verify

log = logging.getLogger(__name__)
router = APIRouter(prefix="/provider-webhooks", tags=["provider webhooks"])

MAX_BODY = 256 * 1024


@router.post(
    "/openai",
    responses=problem_responses(401, 413, 422, 503),
    summary="OpenAI's webhooks (Standard Webhooks signature, secret FINETUNE_OPENAI_WEBHOOK_SECRET)",
)
async def openai_webhook(request: Request, session: SessionDep, settings: SettingsDep) -> dict[str, str]:
    if settings.openai_webhook_secret is None:
        raise Unavailable("OpenAI webhooks are not configured (FINETUNE_OPENAI_WEBHOOK_SECRET)", code="webhooks_off")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidInput("webhook body too large", code="body_too_large")
    try:
        webhook_id = verify(settings.openai_webhook_secret.get_secret_value(), body, request.headers)
    except (WebhookVerificationError, WebhookSecretError) as exc:
        raise Unauthorized(f"webhook signature check failed: {exc}", code="invalid_webhook_signature") from exc
    try:
        payload = json.loads(body)
        event_type = str(payload["type"])
        object_id = str(payload["data"]["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("webhook payload is not {type, data: {id}}", code="invalid_webhook_payload") from exc
    log.info("openai webhook %s %s for %s", webhook_id, event_type, object_id)
    if event_type.startswith("fine_tuning.job."):
        job = jobs.apply_provider_webhook(session, "openai", object_id)
        session.commit()
        if job is not None:
            queue.enqueue("jobs.advance", job.id)
            return {"status": "accepted", "job_id": job.id}
        return {"status": "ignored", "reason": "unknown job"}
    return {"status": "ignored", "reason": f"event type {event_type} not handled"}
