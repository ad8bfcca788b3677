"""Database rows to API shapes."""

from __future__ import annotations

from typing import Any

from api_schemas.datasets import DatasetOut
from service.datasets.models import Dataset


def summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return None
    stats = report.get("statistics") or {}
    out = {k: report.get(k) for k in ("valid", "error_count", "warning_count", "encoding", "cost")}
    out["issue_counts"] = {c["code"]: c["count"] for c in report.get("issue_counts") or []}
    out["tokens"] = {enc: t.get("total_tokens") for enc, t in (stats.get("tokens_by_encoding") or {}).items()}
    return out


def dataset_out(ds: Dataset) -> DatasetOut:
    return DatasetOut(
        id=ds.id,
        project_id=ds.project_id,
        filename=ds.filename,
        status=ds.status,
        format=ds.format,
        declared_format=ds.declared_format,
        sha256=ds.sha256,
        size_bytes=ds.size_bytes,
        n_examples=ds.n_examples,
        model=ds.model,
        source_dataset_id=ds.source_dataset_id,
        derivation=ds.derivation,
        summary=summary(ds.report),
        metadata=ds.metadata_,
        created_at=ds.created_at,
        updated_at=ds.updated_at,
    )
