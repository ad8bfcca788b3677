"""Checks before a job is created: the model can be fine-tuned and is still served, and what the job will cost.

Cost: billable tokens = n_epochs * sum(min(limit, tokens per example)). The dataset report holds that sum for the model
it was validated for; for another model of the same encoding it is rescaled by epochs, otherwise the untruncated total of
the model's encoding is used (an upper bound, said so in a warning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import object_session

from service.clock import utcnow
from service.datasets.models import Dataset
from service.db import session_scope
from service.errors import InvalidInput
from service.jobs.deprecation import OPENAI_LAST_JOB_DAY, SHUTDOWN_WARNING_DAYS
from service.pricing import auto_epochs, load_price_table, model_info, quote_training
from service.pricing.table import PriceTableError, UnknownModel
from service.providers import registry
from service.settings import get_settings

__all__ = ["OPENAI_LAST_JOB_DAY", "SHUTDOWN_WARNING_DAYS", "Preflight", "preflight"]


@dataclass
class Preflight:
    estimated_cost: Decimal | None = None
    price_table_version: str | None = None
    billable_tokens: int | None = None
    n_epochs: int | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)


def _warn(out: Preflight, code: str, message: str) -> None:
    out.warnings.append({"code": code, "message": message})


def _table() -> Any:
    return load_price_table(get_settings().price_table_path)


def _billable(report: dict[str, Any], encoding: str, n_epochs: int, out: Preflight) -> int | None:
    cost = report.get("cost") or {}
    if cost.get("encoding") == encoding and cost.get("billable_tokens") is not None and cost.get("n_epochs"):
        return int(cost["billable_tokens"]) // int(cost["n_epochs"]) * n_epochs
    totals = ((report.get("statistics") or {}).get("tokens_by_encoding") or {}).get(encoding)
    if not totals:
        return None
    _warn(
        out, "cost_upper_bound", "the dataset was checked for another model; examples over the limit are not truncated"
    )
    return int(totals["total_tokens"]) * n_epochs


def preflight(provider: str, model: str, train: Dataset, hyperparameters: dict[str, Any], method: str) -> Preflight:
    out = Preflight()
    today = utcnow().date()
    entry = registry.find(provider)
    if entry is not None and entry.capabilities.runs_locally:
        return _local(model, out, train, method)
    if entry is not None and entry.training_quote is not None:
        return _quoted(entry, model, train, hyperparameters, method, out)
    if entry is None or entry.pricing != "price_table":
        return out
    if entry.name == "openai":
        if today > OPENAI_LAST_JOB_DAY:
            raise InvalidInput(
                f"OpenAI accepts no new fine-tuning jobs after {OPENAI_LAST_JOB_DAY}; rerun the recipe on another "
                "provider",
                code="provider_closed",
            )
        _warn(
            out,
            "openai_fine_tuning_closing",
            f"OpenAI accepts no new fine-tuning jobs after {OPENAI_LAST_JOB_DAY}; POST /v1/jobs/{{id}}/rerun moves a "
            "recipe",
        )
    limit = entry.max_training_file_bytes
    if limit is not None and train.size_bytes > limit:
        raise InvalidInput(
            f"{entry.name} accepts training files up to {limit / 1024**2:.0f} MB; dataset {train.id} is "
            f"{train.size_bytes / 1024**2:.1f} MB: split it or use fewer examples",
            code="file_too_large",
            param="training_dataset_id",
        )
    if entry.closing_notice:
        _warn(out, f"{entry.name}_fine_tuning_closing", entry.closing_notice)
    table = load_price_table(entry.price_table_path(get_settings())) if entry.price_table_path else _table()
    out.price_table_version = table.version
    try:
        info = model_info(model, table=table)
    except UnknownModel:
        _warn(out, "unknown_model", f"{model} is not in price table {table.version}: no cost estimate or model checks")
        return out
    if not info.fine_tunable(method):  # type: ignore[arg-type]
        methods = ", ".join(info.entry.fine_tuning_methods) or "none"
        raise InvalidInput(
            f"{model} cannot be fine-tuned with method {method!r} (supports: {methods})", code="model_not_fine_tunable"
        )
    shutdown = info.entry.shutdown_date
    if shutdown is not None:
        if shutdown <= today:
            raise InvalidInput(f"{model} was shut down on {shutdown}", code="model_shut_down")
        if shutdown - today <= timedelta(days=SHUTDOWN_WARNING_DAYS):
            _warn(out, "model_shutdown_soon", f"{info.name} and its fine-tunes stop serving on {shutdown}")
    report = train.report or {}
    n_examples = train.n_examples or (report.get("statistics") or {}).get("examples") or 0
    if n_examples < 1:
        return out
    epochs = hyperparameters.get("n_epochs", "auto")
    out.n_epochs = auto_epochs(n_examples) if epochs in (None, "auto") else int(epochs)
    out.billable_tokens = _billable(report, info.encoding, out.n_epochs, out)
    if out.billable_tokens is None:
        return out
    try:
        quote = quote_training(model, out.billable_tokens, table=table)
    except PriceTableError as exc:
        _warn(out, "no_training_price", str(exc))
        return out
    out.estimated_cost = quote.amount_usd
    return out


def _check_data_fits_method(train: Dataset, method: str) -> None:
    if train.format is not None and (method == "dpo") != (train.format == "preference"):
        wanted = "preference" if method == "dpo" else "chat"
        raise InvalidInput(
            f"method {method!r} trains on {wanted} examples; the training dataset holds {train.format} examples",
            code="dataset_method_mismatch",
        )


def _quoted(
    entry: Any, model: str, train: Dataset, hyperparameters: dict[str, Any], method: str, out: Preflight
) -> Preflight:
    """A provider with its own price list quotes the tokens of one epoch; the dataset report counted them with an
    OpenAI tokenizer, not the model's own, so the estimate says it is approximate. Its training would fail on data of
    the other method's shape after the upload: refused here, before anything is spent."""
    _check_data_fits_method(train, method)
    totals = ((train.report or {}).get("statistics") or {}).get("tokens_by_encoding") or {}
    encoding = "o200k_base" if "o200k_base" in totals else next(iter(totals), None)
    if encoding is None:
        return out
    try:
        quote = entry.training_quote(model, int(totals[encoding]["total_tokens"]), hyperparameters, method)
    except UnknownModel as exc:
        _warn(out, "unknown_model", f"{model} is not in {entry.name}'s price list {exc.version}: no cost estimate")
        return out
    out.estimated_cost, out.price_table_version, out.billable_tokens = (
        quote.amount_usd,
        quote.price_table_version,
        quote.tokens,
    )
    _warn(
        out,
        "cost_estimate_approximate",
        f"tokens counted with {encoding}, not {model}'s own tokenizer; {entry.name} bills its own count",
    )
    return out


def _local(model: str, out: Preflight, train: Dataset, method: str) -> Preflight:
    """Local training costs no provider money; the base model must be one the project (the training dataset's) may
    use and this machine can load (see service.jobs.local_models). DPO trains on preference rows and supervised
    fine-tuning on chat rows: a mismatch is refused here rather than failing the training."""
    _check_data_fits_method(train, method)
    from service.jobs.local_models import resolve_local_model
    from service.providers.local import LocalTrainingError

    try:
        session = object_session(train)
        if session is not None:
            resolve_local_model(session, get_settings(), train.project_id, model, purpose="train")
        else:
            with session_scope() as fresh:
                resolve_local_model(fresh, get_settings(), train.project_id, model, purpose="train")
    except LocalTrainingError as exc:
        raise InvalidInput(str(exc), code="base_model_unavailable") from exc
    out.estimated_cost = Decimal("0")
    return out
