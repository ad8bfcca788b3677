"""Webhooks from providers to us. They only make the affected row due at once; the worker then fetches the truth
from the provider, so a forged, replayed or out-of-order webhook can at worst cause one extra poll.

Two addresses: ``/openai`` verifies with the server-wide secret (``FINETUNE_OPENAI_WEBHOOK_SECRET``) and may wake any
project's job; ``/openai/{project_id}`` verifies with the secret that project stored with its OpenAI credentials (or,
when it stored none, the server-wide one) and only wakes that project's jobs, so projects with their own OpenAI
organizations each keep their own secret.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request

from api_schemas.common import problem_responses
from service.api.deps import SessionDep, SettingsDep
from service.errors import InvalidInput, Unauthorized, Unavailable
from service.jobs import service as jobs
from service.jobs.lifecycle import JOBS
from service.providers import registry
from service.webhooks.signing import WebhookSecretError, WebhookVerificationError, verify
from service.work.wake import wake

log = logging.getLogger(__name__)
router = APIRouter(prefix="/provider-webhooks", tags=["provider webhooks"])

MAX_BODY = 256 * 1024


async def _receive(request: Request, session: SessionDep, secret: str, project_id: str | None) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidInput("webhook body too large", code="body_too_large")
    try:
        webhook_id = verify(secret, body, request.headers)
    except (WebhookVerificationError, WebhookSecretError) as exc:
        raise Unauthorized(f"webhook signature check failed: {exc}", code="invalid_webhook_signature") from exc
    try:
        payload = json.loads(body)
        event_type = str(payload["type"])
        object_id = str(payload["data"]["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("webhook payload is not {type, data: {id}}", code="invalid_webhook_payload") from exc
    log.info("openai webhook %s %s for %s (project %s)", webhook_id, event_type, object_id, project_id or "any")
    if event_type.startswith("fine_tuning.job."):
        job = jobs.apply_provider_webhook(session, "openai", object_id, project_id=project_id)
        session.commit()
        if job is not None:
            wake(JOBS, job.id)
            return {"status": "accepted", "job_id": job.id}
        return {"status": "ignored", "reason": "unknown job"}
    return {"status": "ignored", "reason": f"event type {event_type} not handled"}


@router.post(
    "/openai",
    responses=problem_responses(401, 413, 422, 503),
    summary="OpenAI's webhooks (Standard Webhooks signature, secret FINETUNE_OPENAI_WEBHOOK_SECRET)",
)
async def openai_webhook(request: Request, session: SessionDep, settings: SettingsDep) -> dict[str, str]:
    if settings.openai_webhook_secret is None:
        raise Unavailable("OpenAI webhooks are not configured (FINETUNE_OPENAI_WEBHOOK_SECRET)", code="webhooks_off")
    return await _receive(request, session, settings.openai_webhook_secret.get_secret_value(), None)


@router.post(
    "/openai/{project_id}",
    responses=problem_responses(401, 413, 422, 503),
    summary="OpenAI's webhooks for one project (secret stored with its OpenAI credentials)",
)
async def openai_project_webhook(
    project_id: str, request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, str]:
    cred = registry.credential_for(session, project_id, "openai")
    secret = registry.decode_credential(settings, cred).webhook_secret if cred is not None else None
    if secret is None and settings.openai_webhook_secret is not None:
        secret = settings.openai_webhook_secret.get_secret_value()
    if secret is None:
        # The same answer for an unknown project as for one without a secret: the address reveals nothing.
        raise Unavailable(
            "OpenAI webhooks are not configured for this project: PUT /v1/providers/openai/credentials with "
            "webhook_secret",
            code="webhooks_off",
        )
    return await _receive(request, session, secret, project_id)
