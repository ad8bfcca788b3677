from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator

from api_schemas.common import Page, problem_responses
from api_schemas.providers import ProviderModelOut
from service.api.deps import CallerDep, SessionDep, SettingsDep
from service.api.outbound import OutboundGateDep
from service.clock import utcnow
from service.db import release_connection
from service.net import allowed_url, outbound_policy
from service.providers import registry
from service.providers.models import ProviderCredential

router = APIRouter(prefix="/providers", tags=["providers"])


class ProviderOut(BaseModel):
    name: str
    description: str
    available: bool
    unavailable_reason: str | None = None
    capabilities: dict[str, Any]
    hyperparameters_schema: dict[str, Any]


class CredentialIn(BaseModel):
    api_key: str = Field(min_length=1, max_length=500)
    base_url: str | None = Field(default=None, max_length=500, description="For OpenAI-compatible servers.")
    webhook_secret: str | None = Field(
        default=None,
        max_length=200,
        description="The signing secret (whsec_...) of the provider's webhooks to "
        "POST /v1/provider-webhooks/{provider}/{project_id}. Omitted: the stored one is kept; null: removed.",
    )

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from service.webhooks.signing import WebhookSecretError, decode_secret

        try:
            decode_secret(v)
        except WebhookSecretError as exc:
            raise ValueError(str(exc)) from None
        return v


class CredentialOut(BaseModel):
    provider: str
    base_url: str | None
    hint: str
    webhook_secret_set: bool = False
    webhook_url_path: str | None = Field(
        default=None, description="Where to point the provider's webhooks (under this server's base URL)."
    )
    updated_at: Any


@router.get("", response_model=list[ProviderOut], responses=problem_responses(401))
def list_providers(_: CallerDep) -> list[ProviderOut]:
    out = []
    for e in registry.entries():
        ok, reason = e.availability()
        out.append(
            ProviderOut(
                name=e.name,
                description=e.description,
                available=ok,
                unavailable_reason=reason,
                capabilities=e.capabilities.model_dump(),
                hyperparameters_schema=e.params_model.model_json_schema(),
            )
        )
    return out


@router.put(
    "/{provider}/credentials",
    response_model=CredentialOut,
    responses=problem_responses(401, 422),
    summary="Store a key",
)
def put_credentials(
    provider: str, body: CredentialIn, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> CredentialOut:
    registry.entry(provider)
    cred = registry.credential_for(session, caller.project_id, provider)
    webhook_secret = body.webhook_secret
    if cred is None:
        cred = ProviderCredential(project_id=caller.project_id, provider=provider, secret_ciphertext="")
    elif "webhook_secret" not in body.model_fields_set:
        webhook_secret = registry.decode_credential(settings, cred).webhook_secret
    cred.secret_ciphertext = registry.encode_credential(
        settings, registry.CredentialSecrets(api_key=body.api_key, webhook_secret=webhook_secret)
    )
    if body.base_url is not None:
        # The provider's clients dial this URL for every call: it passes the outbound policy like any user-given URL.
        allowed_url(body.base_url, field="base_url", policy=outbound_policy(settings))
    cred.base_url = body.base_url
    cred.hint = body.api_key[-4:] if len(body.api_key) >= 12 else ""
    cred.updated_at = utcnow()
    session.add(cred)
    session.flush()
    return CredentialOut(
        provider=provider,
        base_url=cred.base_url,
        hint=cred.hint,
        webhook_secret_set=webhook_secret is not None,
        webhook_url_path=f"/v1/provider-webhooks/{provider}/{caller.project_id}" if webhook_secret else None,
        updated_at=cred.updated_at,
    )


@router.get(
    "/{provider}/models",
    response_model=Page[ProviderModelOut],
    responses=problem_responses(401, 422, 429, 503),
    summary="Models the provider can fine-tune or serve, with shutdown dates and warnings",
)
def list_models(
    provider: str, caller: CallerDep, session: SessionDep, settings: SettingsDep, gate: OutboundGateDep
) -> Page[ProviderModelOut]:
    from service.jobs.deprecation import provider_models

    built = registry.build_provider(
        session, settings, caller.project_id, provider, timeout_s=settings.outbound_timeout_s
    )
    # The provider may take its time: its answer is awaited with no database connection held, in one of the few
    # slots this project has for such calls.
    release_connection(session)
    with gate.slot(caller.project_id):
        data = provider_models(built)
    return Page[ProviderModelOut](data=data, has_more=False, next_cursor=None)
