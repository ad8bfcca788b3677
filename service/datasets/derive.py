"""Datasets made from other datasets: frozen splits and format conversions, each linked to its source."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sqlmodel import Session

from api_schemas.datasets import DatasetStatus
from service.datasets import service
from service.datasets.convert import ChatTemplate, CsvColumns, csv_to_chat, prompt_completion_to_chat
from service.datasets.dedupe import build_signature_index, find_leakage
from service.datasets.models import Dataset
from service.datasets.split import split_dataset
from service.datasets.storage import blob_path, stage_file
from service.errors import Conflict, InvalidInput
from service.settings import Settings


def _source(session: Session, project_id: str, dataset_id: str) -> Dataset:
    ds = service.get_dataset(session, project_id, dataset_id)
    if ds.status == DatasetStatus.validating:
        raise Conflict(f"dataset {ds.id} is still being validated", code="dataset_not_ready")
    return ds


def _register(
    session: Session, settings: Settings, src: Dataset, path: Path, name: str, derivation: dict[str, Any]
) -> Dataset:
    staged = stage_file(settings, path)
    ds, _ = service.create_from_staged(
        session,
        settings,
        src.project_id,
        staged,
        filename=name,
        model=src.model,
        source_dataset_id=src.id,
        derivation=derivation,
    )
    return ds


def split(
    session: Session,
    settings: Settings,
    project_id: str,
    dataset_id: str,
    fractions: dict[str, float],
    seed: int,
    stratify_by: str | None,
) -> dict[str, Dataset]:
    src = _source(session, project_id, dataset_id)
    if src.status != DatasetStatus.ready:
        raise Conflict(f"dataset {src.id} is {src.status}; fix it before splitting", code="dataset_not_ready")
    if src.format not in ("chat", "preference", "prompt_completion"):
        raise InvalidInput(f"only JSONL datasets can be split (this one is {src.format})", code="split_unsupported")
    out: dict[str, Dataset] = {}
    with tempfile.TemporaryDirectory(dir=settings.files_dir / "tmp") as tmp:
        outputs = split_dataset(
            blob_path(settings, src.sha256), Path(tmp), fractions=fractions, seed=seed, stratify_by=stratify_by
        )
        for name, o in outputs.items():
            derivation = {
                "kind": "split",
                "split": name,
                "fractions": fractions,
                "seed": seed,
                "stratify_by": stratify_by,
                "examples": o.examples,
                "class_counts": o.class_counts,
            }
            stem = src.filename.rsplit(".", 1)[0]
            out[name] = _register(session, settings, src, o.path, f"{stem}.{name}.jsonl", derivation)
    return out


def convert(
    session: Session,
    settings: Settings,
    project_id: str,
    dataset_id: str,
    *,
    template: dict[str, Any] | None,
    csv_columns: dict[str, Any] | None,
    delimiter: str | None,
) -> tuple[Dataset, dict[str, Any]]:
    src = _source(session, project_id, dataset_id)
    stem = src.filename.rsplit(".", 1)[0]
    with tempfile.TemporaryDirectory(dir=settings.files_dir / "tmp") as tmp:
        dst = Path(tmp) / "converted.jsonl"
        try:
            if src.format == "prompt_completion":
                tpl = ChatTemplate(**(template or {}))
                result = prompt_completion_to_chat(blob_path(settings, src.sha256), dst, template=tpl)
                how: dict[str, Any] = {"template": tpl.model_dump()}
            elif src.format == "csv" or src.declared_format == "csv":
                columns = csv_columns or (src.options.get("csv") or None)
                if not columns:
                    raise InvalidInput("say which CSV columns hold user and assistant text", code="csv_columns_missing")
                cols = CsvColumns(**columns)
                result = csv_to_chat(blob_path(settings, src.sha256), dst, columns=cols, delimiter=delimiter)
                how = {"csv_columns": cols.model_dump()}
            else:
                raise InvalidInput(
                    f"dataset {src.id} is {src.format}; only prompt_completion and csv convert to chat",
                    code="conversion_unsupported",
                )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"conversion options are not valid: {exc}", code="invalid_conversion") from exc
        summary = result.model_dump(mode="json", exclude={"source", "destination"})
        ds = _register(session, settings, src, dst, f"{stem}.chat.jsonl", {"kind": "conversion", "to": "chat", **how})
    return ds, summary


def leakage(
    session: Session, settings: Settings, project_id: str, train_id: str, test_id: str, threshold: float
) -> dict[str, Any]:
    """Exact and near-duplicate overlap between a training set and an evaluation set."""
    train = _source(session, project_id, train_id)
    test = _source(session, project_id, test_id)
    sig_dir = settings.data_dir / "signatures"
    sig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in (train, test):
        sig = sig_dir / f"{ds.sha256}-{threshold}.sig"
        if not sig.exists():
            tmp = sig.with_suffix(".tmp")
            build_signature_index(blob_path(settings, ds.sha256), tmp, near_threshold=threshold)
            tmp.replace(sig)
        paths.append(sig)
    result = find_leakage(paths[0], paths[1], threshold=threshold)
    return {"train_dataset_id": train.id, "test_dataset_id": test.id, **result.model_dump(mode="json")}
