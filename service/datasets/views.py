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


def first_problems(report: dict[str, Any] | None, limit: int = 3) -> str:
    """The first errors of a validation report, each with its line and field, as one sentence."""
    issues = [i for i in (report or {}).get("issues") or [] if i.get("severity") == "error"]
    issues.sort(key=lambda i: (i.get("line") or 0, i.get("field") or ""))
    parts = []
    for issue in issues[:limit]:
        where = " ".join(
            p for p in (f"line {issue['line']}" if issue.get("line") else "", issue.get("field") or "") if p
        )
        parts.append(f"{where}: {issue.get('message')} ({issue.get('code')})" if where else str(issue.get("message")))
    total = (report or {}).get("error_count") or len(issues)
    more = f"; and {total - len(parts)} more" if total > len(parts) else ""
    return "; ".join(parts) + more if parts else "the file did not pass validation"
