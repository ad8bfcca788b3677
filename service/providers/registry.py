"""Which providers exist, whether they can run here, and how to build one for a project."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlmodel import Session, select

from service.errors import InvalidInput, Unavailable
from service.providers.base import Capabilities, TrainingProvider
from service.providers.models import ProviderCredential
from service.settings import Settings


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    description: str
    capabilities: Capabilities
    params_model: Any
    availability: Callable[[], tuple[bool, str | None]]
    # (settings, the project's credential row, its decrypted key, timeout_s): timeout_s, when given, bounds each call
    # to the provider and turns its retries off (calls made while the API answers a request).
    build: Callable[[Settings, ProviderCredential | None, str | None, float | None], TrainingProvider]
    # How the base and fine-tuned models of this provider's jobs are called to evaluate them: "openai" (an
    # OpenAI-compatible API with the project's credentials), "local" (this service's inference runtime); None: they
    # cannot be evaluated yet. Also the ``provider`` of a model candidate (api_schemas.evaluations.ModelCandidate).
    evaluation_target: Literal["openai", "local"] | None = None
    # Where the price of its training and inference comes from: "price_table" (the price table, by model: pre-flight
    # checks the model and estimates the cost there), "free" (this service's own hardware); None: unknown.
    pricing: Literal["price_table", "free"] | None = None
    # OpenAI's hyperparameters in and out of this provider's own (jobs made through the OpenAI-shaped routes).
    hyperparameters: HyperparameterMap = field(default_factory=lambda: HyperparameterMap())
    # Whether a model name is one this provider trains (picks the provider when a request names only the model).
    claims_model: Callable[[str], bool] = lambda _name: False
    # (name, created as Unix seconds) of the base models a project may train here; read from tables, never a call out.
    base_models: Callable[[Session, str, Settings], list[tuple[str, int]]] = lambda _s, _p, _settings: []
    # evaluation_target "openai": the OpenAI-compatible client (base URL, key) its models are called with for a
    # project; None: OpenAI's (the project's openai credentials).
    inference_client: Callable[[Session, Settings, str], Any] | None = None
    # pricing "price_table": the table of its models; None: the settings' (OpenAI's) table.
    price_table_path: Callable[[Settings], Any] | None = None
    # The largest training file it accepts (checked before a job is created); None: no limit known.
    max_training_file_bytes: int | None = None
    # A warning every new job of this provider carries (its fine-tuning winding down).
    closing_notice: str | None = None
    # Prices that do not fit the price table's shape (Together's: by model size, LoRA or full, SFT or DPO): (model,
    # tokens of one epoch, hyperparameters, method) -> pricing.CostQuote; raises pricing.UnknownModel when unlisted.
    training_quote: Callable[[str, int, dict[str, Any], str], Any] | None = None
    # Its own inference prices, likewise: (model, input tokens, output tokens) -> USD as a Decimal; raises
    # pricing.UnknownModel when unlisted.
    inference_quote: Callable[[str, int, int], Any] | None = None


def _same(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hyperparameters.items() if v is not None}


@dataclass(frozen=True)
class HyperparameterMap:
    from_openai: Callable[[dict[str, Any]], dict[str, Any]] = _same
    to_openai: Callable[[dict[str, Any]], dict[str, Any]] = _same
    # Names that say where the provider trains rather than what (Azure's training tier): not part of a recipe.
    placement: frozenset[str] = frozenset()


def _openai_entry() -> ProviderEntry:
    from service.providers.openai.model_names import claims_openai_model
    from service.providers.openai.provider import OpenAIProvider

    def build(
        settings: Settings, cred: ProviderCredential | None, secret: str | None, timeout_s: float | None
    ) -> TrainingProvider:
        key = secret or (settings.openai_api_key.get_secret_value() if settings.openai_api_key else None)
        if not key:
            raise Unavailable(
                "no OpenAI key: store one with PUT /v1/providers/openai/credentials or set FINETUNE_OPENAI_API_KEY",
                code="provider_credentials_missing",
            )
        base_url = (cred.base_url if cred else None) or settings.openai_base_url
        if timeout_s is not None:
            return OpenAIProvider(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
        return OpenAIProvider(api_key=key, base_url=base_url)

    return ProviderEntry(
        name="openai",
        description="OpenAI fine-tuning API, or any server speaking it (set a base URL).",
        capabilities=OpenAIProvider.capabilities,
        params_model=OpenAIProvider.params_model,
        availability=lambda: (True, None),
        evaluation_target="openai",
        pricing="price_table",
        build=build,
        claims_model=claims_openai_model,
        base_models=_openai_base_models,
    )


def _openai_base_models(session: Session, project_id: str, settings: Settings) -> list[tuple[str, int]]:
    """OpenAI's fine-tunable models from the price table, for projects that can reach OpenAI (a stored key or the
    server's), each dated by the table's version."""
    from datetime import UTC, datetime

    from service.pricing.table import load_price_table

    if credential_for(session, project_id, "openai") is None and settings.openai_api_key is None:
        return []
    table = load_price_table(settings.price_table_path)
    created = int(datetime.fromisoformat(table.version).replace(tzinfo=UTC).timestamp())
    return [(name, created) for name, entry in sorted(table.models.items()) if entry.fine_tuning_methods]


def _local_entry() -> ProviderEntry:
    from service.providers.local import claims_local_model, is_available
    from service.providers.local.model_names import packaged_base_models
    from service.providers.local.params import from_openai_hyperparameters, to_openai_hyperparameters
    from service.providers.local_provider import LocalProvider

    return ProviderEntry(
        name="local",
        description="LoRA fine-tuning of open models on this service's own workers (CPU or GPU), no account needed.",
        capabilities=LocalProvider.capabilities,
        params_model=LocalProvider.params_model,
        availability=is_available,
        evaluation_target="local",
        pricing="free",
        build=lambda settings, _cred, _secret, _timeout_s: LocalProvider(settings),
        hyperparameters=HyperparameterMap(from_openai_hyperparameters, to_openai_hyperparameters),
        claims_model=claims_local_model,
        base_models=lambda _s, _p, _settings: packaged_base_models(),
    )


def _azure_entry() -> ProviderEntry:
    from service.providers.azure import files
    from service.providers.azure.model_names import claims_azure_model
    from service.providers.azure.provider import AzureProvider

    def build(
        settings: Settings, cred: ProviderCredential | None, secret: str | None, timeout_s: float | None
    ) -> TrainingProvider:
        endpoint, key = _azure_account(settings, cred, secret)
        if timeout_s is not None:
            return AzureProvider(endpoint=endpoint, api_key=key, timeout=timeout_s, max_retries=0)
        return AzureProvider(endpoint=endpoint, api_key=key)

    return ProviderEntry(
        name="azure",
        description="Azure OpenAI fine-tuning (v1 API, api-key); fine-tunes answer through a deployment you create.",
        capabilities=AzureProvider.capabilities,
        params_model=AzureProvider.params_model,
        availability=lambda: (True, None),
        evaluation_target="openai",
        pricing="price_table",
        build=build,
        claims_model=claims_azure_model,
        # No base models in /v1/models: Azure's carry OpenAI's names (which would take them from OpenAI there) and
        # answer only under a deployment's name; GET /v1/providers/azure/models lists what the resource trains.
        # Azure's hyperparameters are OpenAI's; its training tier says where to train, not what: a rerun leaves it.
        hyperparameters=HyperparameterMap(placement=frozenset({"training_type"})),
        inference_client=_azure_inference_client,
        price_table_path=lambda _settings: _azure_price_table(),
        max_training_file_bytes=files.MAX_FILE_BYTES - len(files.BOM),  # the service adds the BOM
        closing_notice="Azure OpenAI trains these models for existing customers until about 2027-04 and serves their "
        "fine-tuned deployments until about 2027-10; POST /v1/jobs/{id}/rerun moves a recipe",
    )


def _azure_account(settings: Settings, cred: ProviderCredential | None, secret: str | None) -> tuple[str, str]:
    """The resource endpoint (the credential's base_url, else the server's) and its key."""
    key = secret or (settings.azure_openai_api_key.get_secret_value() if settings.azure_openai_api_key else None)
    endpoint = (cred.base_url if cred else None) or settings.azure_openai_endpoint
    if not key or not endpoint:
        raise Unavailable(
            "no Azure OpenAI resource: store its key and endpoint with PUT /v1/providers/azure/credentials "
            "(base_url = https://<resource>.openai.azure.com) or set FINETUNE_AZURE_OPENAI_ENDPOINT and "
            "FINETUNE_AZURE_OPENAI_API_KEY",
            code="provider_credentials_missing",
        )
    return endpoint, key


def _azure_inference_client(session: Session, settings: Settings, project_id: str) -> Any:
    from pydantic import SecretStr

    from service.providers.azure.deployment import v1_base_url
    from service.providers.openai.client import ClientConfig

    cred = credential_for(session, project_id, "azure")
    secret = decode_credential(settings, cred).api_key if cred is not None else None
    endpoint, key = _azure_account(settings, cred, secret)
    return ClientConfig(base_url=v1_base_url(endpoint), api_key=SecretStr(key), auth="api-key")


def _azure_price_table() -> Any:
    from service.pricing.table import BUNDLED_PRICE_TABLE

    return BUNDLED_PRICE_TABLE.with_name("azure_price_table.json")


def _together_entry() -> ProviderEntry:
    from service.providers.together import models
    from service.providers.together.params import from_openai_hyperparameters, to_openai_hyperparameters
    from service.providers.together.provider import TogetherProvider

    def build(
        settings: Settings, cred: ProviderCredential | None, secret: str | None, timeout_s: float | None
    ) -> TrainingProvider:
        key, base_url = models.api_key(settings, secret), models.base_url(settings, cred)
        return TogetherProvider(api_key=key, base_url=base_url, timeout=timeout_s or 60.0)

    return ProviderEntry(
        name="together",
        description="Together's fine-tuning API: open models, LoRA or full, supervised or DPO.",
        capabilities=TogetherProvider.capabilities,
        params_model=TogetherProvider.params_model,
        availability=lambda: (True, None),
        evaluation_target="openai",
        # Its own dated list prices (service/pricing/together_prices.json): not the shape of OpenAI's price table.
        pricing=None,
        build=build,
        hyperparameters=HyperparameterMap(from_openai_hyperparameters, to_openai_hyperparameters),
        claims_model=models.claims_together_model,
        base_models=models.base_models,
        inference_client=models.inference_client,
        training_quote=models.training_quote,
        inference_quote=models.inference_quote,
    )


_ENTRIES: dict[str, Callable[[], ProviderEntry]] = {
    "openai": _openai_entry,
    "local": _local_entry,
    "azure": _azure_entry,
    "together": _together_entry,
}


def register(name: str, factory: Callable[[], ProviderEntry]) -> None:
    _ENTRIES[name] = factory


def entry(name: str) -> ProviderEntry:
    factory = _ENTRIES.get(name)
    if factory is None:
        raise InvalidInput(f"unknown provider {name!r}; known: {', '.join(sorted(_ENTRIES))}", code="unknown_provider")
    return factory()


def find(name: str) -> ProviderEntry | None:
    """The entry of ``name``, or None for a name that is no provider (an evaluation's ``endpoint`` candidates)."""
    return entry(name) if name in _ENTRIES else None


def entries() -> list[ProviderEntry]:
    return [factory() for _, factory in sorted(_ENTRIES.items())]


def credential_for(session: Session, project_id: str, provider: str) -> ProviderCredential | None:
    return session.exec(
        select(ProviderCredential).where(
            ProviderCredential.project_id == project_id, ProviderCredential.provider == provider
        )
    ).first()


@dataclass(frozen=True)
class CredentialSecrets:
    """What a credentials row holds encrypted: the provider key, and optionally the secret that signs the provider's
    webhooks to us (so each project can verify its own)."""

    api_key: str
    webhook_secret: str | None = None


# Rows written before webhook secrets existed hold the bare key; newer rows a JSON object with this marker.
_FORMAT = "finetune.credential.v2"


def encode_credential(settings: Settings, secrets: CredentialSecrets) -> str:
    from service.secrets import encrypt_secret

    plain = json.dumps({"format": _FORMAT, "api_key": secrets.api_key, "webhook_secret": secrets.webhook_secret})
    return encrypt_secret(settings, plain)


def decode_credential(settings: Settings, cred: ProviderCredential) -> CredentialSecrets:
    from service.secrets import decrypt_secret

    plain = decrypt_secret(settings, cred.secret_ciphertext)
    if plain.startswith("{"):
        try:
            data = json.loads(plain)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("format") == _FORMAT:
            return CredentialSecrets(api_key=str(data["api_key"]), webhook_secret=data.get("webhook_secret") or None)
    return CredentialSecrets(api_key=plain)


def webhooks_configured(session: Session, settings: Settings, project_id: str, name: str) -> bool:
    """Whether this provider's webhooks can reach and be verified by us for this project (so polling may relax)."""
    if not entry(name).capabilities.webhooks:
        return False
    if name == "openai" and settings.openai_webhook_secret is not None:
        return True
    cred = credential_for(session, project_id, name)
    return cred is not None and decode_credential(settings, cred).webhook_secret is not None


def build_provider(
    session: Session, settings: Settings, project_id: str, name: str, *, timeout_s: float | None = None
) -> TrainingProvider:
    e = entry(name)
    ok, reason = e.availability()
    if not ok:
        raise Unavailable(f"provider {name!r} is not available here: {reason}", code="provider_unavailable")
    cred = credential_for(session, project_id, name)
    secret = decode_credential(settings, cred).api_key if cred is not None else None
    return e.build(settings, cred, secret, timeout_s)
