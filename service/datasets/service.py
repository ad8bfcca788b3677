"""Dataset intake: store once by content, validate (inline when small, in the worker when large), keep the report."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from api_schemas.datasets import DatasetStatus
from service.clock import utcnow
from service.datasets import states
from service.datasets.models import Dataset
from service.datasets.storage import StagedFile, blob_path, remove_blob_if_unused
from service.errors import Conflict, InvalidInput
from service.jobs.models import Job
from service.settings import Settings
from service.tenancy import get_owned
from service.work import machine, names
from service.work.kind import StepFailure, WorkKind
from service.work.lease import leased

log = logging.getLogger(__name__)

KNOWN_FORMATS = ("chat", "preference", "prompt_completion", "csv")


def get_dataset(session: Session, project_id: str, dataset_id: str) -> Dataset:
    return get_owned(session, Dataset, dataset_id, project_id, "dataset")


def get_ready_dataset(session: Session, project_id: str, dataset_id: str, role: str) -> Dataset:
    """A dataset of the project that passed validation; ``role`` ("training", "test", ...) names it in the error."""
    ds = get_dataset(session, project_id, dataset_id)
    if ds.status != DatasetStatus.ready:
        raise Conflict(
            f"{role} dataset {dataset_id} is {ds.status}, not ready"
            + ("; see GET /v1/datasets/{id}/report" if ds.status == DatasetStatus.invalid else ""),
            code="dataset_not_ready",
        )
    return ds


def find_by_content(session: Session, project_id: str, sha256: str) -> Dataset | None:
    return session.exec(select(Dataset).where(Dataset.project_id == project_id, Dataset.sha256 == sha256)).first()


def create_from_staged(
    session: Session,
    settings: Settings,
    project_id: str,
    staged: StagedFile,
    *,
    filename: str,
    declared_format: str | None = None,
    model: str | None = None,
    options: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    source_dataset_id: str | None = None,
    derivation: dict[str, Any] | None = None,
) -> tuple[Dataset, bool]:
    """Register a staged file as a dataset. Returns ``(dataset, created)``; identical content returns the existing one."""
    if declared_format is not None and declared_format not in KNOWN_FORMATS:
        staged.discard()
        raise InvalidInput(
            f"unknown format {declared_format!r}; use one of {', '.join(KNOWN_FORMATS)}", code="unknown_format"
        )
    existing = find_by_content(session, project_id, staged.sha256)
    if existing is not None:
        staged.discard()
        return existing, False
    staged.commit(settings)
    ds = Dataset(
        project_id=project_id,
        filename=filename,
        status=DatasetStatus.validating,
        declared_format=declared_format,
        sha256=staged.sha256,
        size_bytes=staged.size,
        model=model,
        options=options or {},
        metadata_=metadata or {},
        source_dataset_id=source_dataset_id,
        derivation=derivation,
        next_run_at=utcnow(),
    )
    session.add(ds)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # The same content was uploaded concurrently; answer with the winner.
        session.rollback()
        winner = find_by_content(session, project_id, staged.sha256)
        if winner is None:
            raise
        return winner, False
    if staged.size <= settings.inline_validation_bytes:
        validate_now(session, settings, ds)
    return ds, True


def validate_now(session: Session, settings: Settings, ds: Dataset) -> None:
    from service.datasets.validation import validate_path

    report = validate_path(
        blob_path(settings, ds.sha256),
        format=ds.declared_format,
        model=ds.model,
        csv=ds.options.get("csv"),
    )
    apply_report(session, ds, report)


def apply_report(session: Session, ds: Dataset, report: Any) -> None:
    data = report.model_dump(mode="json")
    ds.report = data
    ds.format = data.get("format") or ds.declared_format
    ds.n_examples = (data.get("statistics") or {}).get("examples")
    _finish(session, ds, DatasetStatus.ready if data.get("valid") else DatasetStatus.invalid)


def _view(ds: Dataset) -> Any:
    from service.datasets.views import dataset_out

    return dataset_out(ds)


def _finish(session: Session, ds: Dataset, status: DatasetStatus) -> None:
    ds.updated_at = utcnow()
    machine.transition(session, ds, status, states.MACHINE, view=_view)
    session.add(ds)


def _give_up(session: Session, ds: Dataset, failure: StepFailure) -> None:
    """Validation (or making a derived dataset) kept failing: the dataset is invalid, and its report says why."""
    message = f"validation failed {failure.attempts} times in a row; last error: {failure.message}"
    issue = {"code": "step_failed", "severity": "error", "message": message}
    ds.report = {
        **(ds.report or {}),
        "valid": False,
        "error_count": 1,
        "warning_count": 0,
        "issue_counts": [{"code": "step_failed", "severity": "error", "count": 1, "listed": 1}],
        "issues": [issue],
    }
    _finish(session, ds, DatasetStatus.invalid)


DATASETS = WorkKind("dataset", Dataset, names.VALIDATE_DATASET, give_up=_give_up)


def validate_task(dataset_id: str, settings: Settings) -> None:
    """Worker step: validate a dataset that was too large to check inside the upload request; a derived dataset of
    a large source (split, conversion) is first made from its source, then validated in the same step."""
    from service.datasets import derive

    with leased(DATASETS, dataset_id) as got:
        if got is None:
            return
        session, ds = got
        if ds.status != DatasetStatus.validating:
            ds.next_run_at = None
            return
        if derive.is_pending(ds):
            derive.produce(session, settings, ds)
            if ds.status != DatasetStatus.validating:
                return
        validate_now(session, settings, ds)


def delete_dataset(session: Session, settings: Settings, project_id: str, dataset_id: str) -> None:
    ds = get_dataset(session, project_id, dataset_id)
    used = session.exec(
        select(Job.id).where(sa.or_(Job.training_dataset_id == ds.id, Job.validation_dataset_id == ds.id)).limit(1)
    ).first()
    if used:
        raise Conflict(
            f"dataset {ds.id} is used by job {used}; it is kept for that job's record", code="dataset_in_use"
        )
    from service.datasets.derive import is_pending

    children = session.exec(
        select(Dataset).where(Dataset.source_dataset_id == ds.id, Dataset.status == DatasetStatus.validating)
    ).all()
    if any(is_pending(child) for child in children):
        raise Conflict(
            f"datasets derived from {ds.id} are still being made from it; delete it once they are done",
            code="dataset_in_use",
        )
    sha = ds.sha256
    try:
        with session.begin_nested():
            session.delete(ds)
            session.flush()
    except sa.exc.IntegrityError as exc:
        # Evaluations and distillations keep the dataset they ran on as part of their record.
        raise Conflict(
            f"dataset {ds.id} is used by an evaluation or a distillation; it is kept for their record",
            code="dataset_in_use",
        ) from exc
    still_used = session.exec(select(Dataset.id).where(Dataset.sha256 == sha).limit(1)).first() is not None
    remove_blob_if_unused(settings, sha, still_used)
