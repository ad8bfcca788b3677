"""Which model names are Together's, and how they are called: base models from the dated Together price table, the
fine-tunes Together names ``<account>/<base>-<suffix>-<hash>``; both answer on Together's OpenAI-compatible inference
(``/chat/completions``) with the project's Together key."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import SecretStr
from sqlmodel import Session

from service.errors import Unavailable
from service.pricing.estimates import CostQuote
from service.providers.models import ProviderCredential
from service.providers.openai.client import ClientConfig
from service.settings import Settings


def listed_base_models() -> dict[str, int]:
    """Base model -> created (Unix seconds, the table's version date)."""
    from service.pricing.together import load_together_prices

    table = load_together_prices()
    created = int(datetime.fromisoformat(table.version).replace(tzinfo=UTC).timestamp())
    return {name: created for name in table.models}


def claims_together_model(name: str) -> bool:
    """A listed base model, or one of their fine-tunes (the output name starts with an account and the base's name
    without its organisation)."""
    bases = listed_base_models()
    if name in bases:
        return True
    account, _, rest = name.partition("/")
    return bool(account) and any(rest.startswith(base.split("/", 1)[-1] + "-") for base in bases)


def api_key(settings: Settings, secret: str | None) -> str:
    key = secret or (settings.together_api_key.get_secret_value() if settings.together_api_key else None)
    if not key:
        raise Unavailable(
            "no Together key: store one with PUT /v1/providers/together/credentials or set FINETUNE_TOGETHER_API_KEY",
            code="provider_credentials_missing",
        )
    return key


def base_url(settings: Settings, cred: ProviderCredential | None) -> str:
    return (cred.base_url if cred is not None else None) or settings.together_base_url


def inference_client(session: Session, settings: Settings, project_id: str) -> ClientConfig:
    """Together's OpenAI-compatible inference with the project's Together key (or the server's)."""
    from service.providers.registry import credential_for, decode_credential

    cred = credential_for(session, project_id, "together")
    secret = decode_credential(settings, cred).api_key if cred is not None else None
    return ClientConfig(base_url=base_url(settings, cred), api_key=SecretStr(api_key(settings, secret)))


def base_models(session: Session, project_id: str, settings: Settings) -> list[tuple[str, int]]:
    """Together's base models for projects that can reach Together (a stored key or the server's)."""
    from service.providers.registry import credential_for

    if credential_for(session, project_id, "together") is None and settings.together_api_key is None:
        return []
    return sorted(listed_base_models().items())


def training_quote(model: str, epoch_tokens: int, hyperparameters: dict[str, Any], method: str) -> CostQuote:
    """The list price of a job: one epoch's tokens times its epochs (Together's default is 1)."""
    from service.pricing.together import training_quote as quote

    epochs = hyperparameters.get("n_epochs")
    epochs = epochs if isinstance(epochs, int) else 1
    kind = str(hyperparameters.get("training_type") or "lora")
    return quote(model, epoch_tokens * epochs, training_type=kind, method=method)


def inference_quote(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    from service.pricing.together import inference_cost

    return inference_cost(model, input_tokens, output_tokens)
