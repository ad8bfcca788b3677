"""Deprecation awareness: which models stop serving when, and what that means for new jobs and finished ones.

Shutdown dates come from the provider when it publishes them (OpenAI's models list carries ``shutdown_date``) and
from our price table otherwise. A fine-tuned model serves until its base model shuts down.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from api_schemas.providers import ModelWarning, ProviderModelOut
from service.errors import Unavailable
from service.pricing import ModelInfo, PriceTable, PriceTableError, UnknownModel, load_price_table
from service.providers.base import ProviderError, ProviderModel, TrainingProvider
from service.settings import get_settings
from service.tokens import base_model_name

# OpenAI accepts no new fine-tuning jobs after this day (see the reference notes and the price table's provider notes).
OPENAI_LAST_JOB_DAY = date(2027, 1, 6)
# Warn this long before a model stops serving, or before a provider stops taking jobs.
SHUTDOWN_WARNING_DAYS = 60


def _table() -> PriceTable | None:
    try:
        return load_price_table(get_settings().price_table_path)
    except PriceTableError:
        return None


def _info(table: PriceTable | None, model: str) -> ModelInfo | None:
    if table is None:
        return None
    try:
        return table.lookup(model)
    except (UnknownModel, ValueError):
        return None


def is_fine_tuned_name(model: str) -> bool:
    name = model.strip()
    return name.startswith("ft:") or ":ft-" in name


def shutdown_warnings(model: str, shutdown: date | None, today: date, *, fine_tuned: bool) -> list[ModelWarning]:
    if shutdown is None:
        return []
    prefix = "fine_tuned_model" if fine_tuned else "model"
    what = f"{model} (a fine-tune: it stops with its base model)" if fine_tuned else model
    if shutdown <= today:
        return [ModelWarning(code=f"{prefix}_shut_down", message=f"{what} stopped serving on {shutdown}")]
    if shutdown - today <= timedelta(days=SHUTDOWN_WARNING_DAYS):
        days = (shutdown - today).days
        return [
            ModelWarning(
                code=f"{prefix}_shutdown_soon",
                message=f"{what} stops serving on {shutdown} (in {days} days); POST /v1/jobs/{{id}}/rerun moves a recipe",
            )
        ]
    return []


def openai_job_warnings(today: date) -> list[ModelWarning]:
    if today > OPENAI_LAST_JOB_DAY:
        return [
            ModelWarning(
                code="fine_tuning_closed",
                message=f"OpenAI accepts no new fine-tuning jobs since {OPENAI_LAST_JOB_DAY}",
            )
        ]
    if OPENAI_LAST_JOB_DAY - today <= timedelta(days=SHUTDOWN_WARNING_DAYS):
        return [
            ModelWarning(
                code="fine_tuning_closing",
                message=f"OpenAI accepts no new fine-tuning jobs after {OPENAI_LAST_JOB_DAY}",
            )
        ]
    return []


def describe_models(
    provider: str, models: list[ProviderModel], today: date, *, provider_methods: list[str] | None = None
) -> list[ProviderModelOut]:
    """The provider's models joined with our price table: whether a new job would be accepted, and warnings.

    ``provider_methods``: the methods of a provider that says per model whether it can train it (our price table
    only knows OpenAI's models)."""
    table = _table()
    out = []
    for m in models:
        info = _info(table, m.id)
        fine_tuned = is_fine_tuned_name(m.id)
        shutdown, source = m.shutdown_date, "provider" if m.shutdown_date else None
        if shutdown is None and info is not None and info.entry.shutdown_date is not None:
            shutdown, source = info.entry.shutdown_date, "price_table"
        methods = list(info.entry.fine_tuning_methods) if info is not None else []
        warnings = shutdown_warnings(m.id, shutdown, today, fine_tuned=fine_tuned)
        shut_down = shutdown is not None and shutdown <= today
        if m.fine_tunable is not None:
            # The provider knows (the local provider says so for each model it can train).
            fine_tunable = m.fine_tunable and not shut_down
            methods = methods or list(provider_methods or [])
        else:
            fine_tunable = bool(methods) and not shut_down
            if provider == "openai" and methods:
                closing = openai_job_warnings(today)
                warnings += closing
                fine_tunable = fine_tunable and not any(w.code == "fine_tuning_closed" for w in closing)
        base = None
        if fine_tuned:
            try:
                base = base_model_name(m.id)
            except ValueError:
                base = None
        out.append(
            ProviderModelOut(
                id=m.id,
                provider=provider,
                owned_by=m.owned_by,
                base_model=base,
                fine_tuned=fine_tuned,
                fine_tunable=fine_tunable,
                fine_tuning_methods=methods if fine_tunable else [],
                shutdown_date=shutdown,
                shutdown_date_source=source,
                price_table_version=info.table_version if info is not None else None,
                training_per_1m_usd=(
                    str(info.entry.training_per_1m)
                    if info is not None and info.entry.training_per_1m is not None
                    else None
                ),
                warnings=warnings,
            )
        )
    return out


def job_serving_warnings(
    fine_tuned_model: str | None, known: list[dict[str, Any]], today: date
) -> list[dict[str, Any]]:
    """Warnings about a finished job's model that depend on today's date (so they are computed when read)."""
    if not fine_tuned_model:
        return []
    info = _info(_table(), fine_tuned_model)
    if info is None:
        return []
    have = {w.get("code") for w in known}
    return [
        w.model_dump()
        for w in shutdown_warnings(fine_tuned_model, info.entry.shutdown_date, today, fine_tuned=True)
        if w.code not in have
    ]


def provider_models(built: TrainingProvider) -> list[ProviderModelOut]:
    """What a provider built for a project (its credentials, its fine-tunes) lists, described for today. This calls
    the provider: hold no database connection around it."""
    from service.clock import utcnow
    from service.providers import registry

    try:
        models = built.list_models()
    except ProviderError as exc:
        raise Unavailable(f"{built.name} did not list its models: {exc.message}", code="provider_error") from exc
    methods = registry.entry(built.name).capabilities.methods
    return describe_models(built.name, models, utcnow().date(), provider_methods=methods)
