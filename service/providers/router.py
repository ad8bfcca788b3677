from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api_schemas.common import problem_responses
from service.api.deps import CallerDep, SessionDep, SettingsDep
from service.clock import utcnow
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


class CredentialOut(BaseModel):
    provider: str
    base_url: str | None
    hint: str
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
    from service.secrets import encrypt_secret

    registry.entry(provider)
    cred = registry.credential_for(session, caller.project_id, provider)
    if cred is None:
        cred = ProviderCredential(project_id=caller.project_id, provider=provider, secret_ciphertext="")
    cred.secret_ciphertext = encrypt_secret(settings, body.api_key)
    cred.base_url = body.base_url
    cred.hint = body.api_key[-4:] if len(body.api_key) >= 12 else ""
    cred.updated_at = utcnow()
    session.add(cred)
    session.flush()
    return CredentialOut(provider=provider, base_url=cred.base_url, hint=cred.hint, updated_at=cred.updated_at)
