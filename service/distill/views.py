"""Distillation rows to API shapes."""

from __future__ import annotations

from typing import Any

from api_schemas.distill import DistillationOut, DistillRunOut, Step, Steps
from service.distill.models import Distillation, DistillRun
from service.work.views import last_error_out


def run_out(run: DistillRun) -> DistillRunOut:
    req = run.config.get("request") or {}
    return DistillRunOut(
        id=run.id,
        project_id=run.project_id,
        status=run.status,
        source_dataset_id=run.source_dataset_id,
        teacher=run.config.get("teacher") or {},
        sampling=req.get("sampling") or {},
        answers_per_prompt=req.get("answers_per_prompt", 1),
        filters=req.get("filters") or {},
        mode=req.get("mode", "realtime"),
        evaluation_id=run.evaluation_id,
        evaluation_ids=list(run.evaluation_ids or []),
        dataset_id=run.dataset_id,
        counts=run.counts or {},
        usage=run.usage or {},
        error=run.error,
        last_error=last_error_out(run),
        cancel_requested=run.cancel_requested_at is not None,
        metadata=run.metadata_,
        created_at=run.created_at,
        updated_at=run.updated_at,
        finished_at=run.finished_at,
    )


def distillation_out(row: Distillation, statuses: dict[str, Any] | None = None) -> DistillationOut:
    """``statuses``: the children's current statuses by id (the caller reads them); missing ones show no status."""
    statuses = statuses or {}

    def step(child_id: str | None) -> Step:
        return Step(id=child_id, status=statuses.get(child_id) if child_id else None)

    config = row.config
    return DistillationOut(
        id=row.id,
        project_id=row.project_id,
        status=row.status,
        source_dataset_id=row.source_dataset_id,
        teacher=config.get("teacher") or {},
        student=config["student"],
        steps=Steps(
            distill=step(row.distill_run_id),
            dataset=step(config.get("dataset_id")),
            train_split=step(row.train_dataset_id),
            test_split=step(row.test_dataset_id),
            job=step(row.job_id),
            evaluation=step(row.evaluation_id),
        ),
        report=row.report,
        error=row.error,
        last_error=last_error_out(row),
        cancel_requested=row.cancel_requested_at is not None,
        metadata=row.metadata_,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )
