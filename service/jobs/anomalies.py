"""Provider answers that the published description allows but that make no sense for the job's state.

A provider (or a server speaking its protocol) may say a job succeeded without naming the fine-tuned model, failed
without saying why, or trained a negative number of tokens. Such values are not stored as facts: the job keeps them
flagged as ``provider_anomalies`` (shown by the API), and nothing is derived from them (no cost from a token count
that cannot be right). The checks are provider-neutral: they read the parsed ``ProviderJob``.
"""

from __future__ import annotations

from typing import Any

from api_schemas.jobs import JobStatus
from service.providers.base import ProviderJob


def provider_anomalies(pj: ProviderJob) -> list[dict[str, Any]]:
    """What is odd in ``pj``, one ``{code, field, message, value}`` per finding (empty when nothing is)."""
    found: list[dict[str, Any]] = []

    def flag(code: str, field: str, message: str, value: Any) -> None:
        found.append({"code": code, "field": field, "message": message, "value": value})

    if pj.trained_tokens is not None and pj.trained_tokens < 0:
        flag(
            "negative_trained_tokens",
            "trained_tokens",
            f"the provider reported {pj.trained_tokens} trained tokens; no cost is computed from it",
            pj.trained_tokens,
        )
    if pj.status == JobStatus.succeeded and not pj.fine_tuned_model:
        flag(
            "succeeded_without_model",
            "fine_tuned_model",
            "the provider reported the job succeeded but named no fine-tuned model",
            pj.fine_tuned_model,
        )
    if pj.status == JobStatus.failed and not (pj.error or {}).get("message"):
        flag("failed_without_error", "error", "the provider reported the job failed without an error", pj.error)
    return found


def merge(known: list[dict[str, Any]] | None, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``known`` plus what is new in ``found`` (by code): an oddity seen once stays on the job."""
    out = list(known or [])
    codes = {a.get("code") for a in out}
    return out + [a for a in found if a["code"] not in codes]
