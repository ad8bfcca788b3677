"""Datasets made from other datasets: frozen splits and format conversions, each linked to its source."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlmodel import Session, select

from api_schemas.datasets import DatasetStatus
from service.clock import utcnow
from service.datasets import service
from service.datasets.convert import ChatTemplate, CsvColumns, csv_to_chat, prompt_completion_to_chat
from service.datasets.dedupe import SIGNATURE_VERSION, build_signature_index, find_leakage
from service.datasets.models import Dataset
from service.datasets.split import check_split_arguments, split_dataset
from service.datasets.storage import blob_path, stage_file
from service.errors import Conflict, InvalidInput
from service.settings import Settings

# A derived dataset whose source is larger than the inline limit is created at once, without its file, and made by
# the dataset work item (then validated in the same step). Until then it is ``validating`` like any dataset not yet
# checked, its ``derivation.output`` is ``"pending"`` and its ``sha256`` a placeholder derived from the request.
PENDING = "pending"
_PLACEHOLDER_PREFIX = "pending-"


def _source(session: Session, project_id: str, dataset_id: str) -> Dataset:
    ds = service.get_dataset(session, project_id, dataset_id)
    if ds.status == DatasetStatus.validating:
        raise Conflict(f"dataset {ds.id} is still being validated", code="dataset_not_ready")
    return ds


def is_pending(ds: Dataset) -> bool:
    """Whether the dataset's file is still to be produced from its source by the worker."""
    return (ds.derivation or {}).get("output") == PENDING


def deferred(settings: Settings, src: Dataset) -> bool:
    """Derivations of sources above the inline validation limit run in the worker, like their validation would."""
    return src.size_bytes > settings.inline_validation_bytes


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


def _request_key(src: Dataset, derivation: dict[str, Any]) -> str:
    """56 hex digits naming what a derived dataset is made of: its source's content and the derivation."""
    spec = orjson.dumps({"source": src.id, "source_sha256": src.sha256, **derivation}, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(spec, digest_size=28).hexdigest()


def _find_derived(session: Session, src: Dataset, key: str, derivation: dict[str, Any]) -> Dataset | None:
    """A dataset already derived from ``src`` by the same request: made by the worker (same request key), or
    inline (its derivation records the same parameters, e.g. before the inline limit changed)."""
    children = session.exec(
        select(Dataset).where(Dataset.project_id == src.project_id, Dataset.source_dataset_id == src.id)
    ).all()
    made = [d.derivation or {} for d in children]
    for child, record in zip(children, made, strict=True):
        if record.get("request_key") == key:
            return child
    for child, record in zip(children, made, strict=True):
        if "request_key" not in record and all(record.get(k) == v for k, v in derivation.items()):
            return child
    return None


def _pending_children(session: Session, src: Dataset, wanted: list[tuple[str, dict[str, Any]]]) -> list[Dataset]:
    """The derived datasets ``wanted`` ((filename, derivation) each), created ``validating`` without a file, or the
    ones an identical earlier request created.

    The placeholder ``sha256`` is the request key, so two identical requests racing each other collide on the
    (project, sha256) unique constraint: the loser rolls back and answers with the winner's datasets.
    """
    for attempt in range(2):
        out = []
        try:
            for filename, derivation in wanted:
                key = _request_key(src, derivation)
                found = _find_derived(session, src, key, derivation)
                if found is None:
                    found = Dataset(
                        project_id=src.project_id,
                        filename=filename,
                        status=DatasetStatus.validating,
                        sha256=_PLACEHOLDER_PREFIX + key,
                        size_bytes=0,
                        model=src.model,
                        source_dataset_id=src.id,
                        derivation={**derivation, "request_key": key, "output": PENDING},
                        next_run_at=utcnow(),
                    )
                    session.add(found)
                    session.flush()
                out.append(found)
            return out
        except sa.exc.IntegrityError:
            if attempt:
                raise
            session.rollback()
    raise AssertionError("unreachable")


def split(
    session: Session,
    settings: Settings,
    project_id: str,
    dataset_id: str,
    fractions: dict[str, float],
    seed: int,
    stratify_by: str | None,
) -> tuple[dict[str, Dataset], bool]:
    """The split datasets, and whether they are still to be made by the worker (a source over the inline limit)."""
    src = _source(session, project_id, dataset_id)
    if src.status != DatasetStatus.ready:
        raise Conflict(f"dataset {src.id} is {src.status}; fix it before splitting", code="dataset_not_ready")
    if src.format not in ("chat", "preference", "prompt_completion"):
        raise InvalidInput(f"only JSONL datasets can be split (this one is {src.format})", code="split_unsupported")
    names = check_split_arguments(fractions, seed, stratify_by)
    stem = src.filename.rsplit(".", 1)[0]
    spec = {"kind": "split", "fractions": fractions, "seed": seed, "stratify_by": stratify_by}
    if deferred(settings, src):
        wanted = [(f"{stem}.{name}.jsonl", {**spec, "split": name}) for name in names]
        return dict(zip(names, _pending_children(session, src, wanted), strict=True)), True
    out: dict[str, Dataset] = {}
    with tempfile.TemporaryDirectory(dir=settings.files_dir / "tmp") as tmp:
        outputs = split_dataset(
            blob_path(settings, src.sha256), Path(tmp), fractions=fractions, seed=seed, stratify_by=stratify_by
        )
        for name, o in outputs.items():
            derivation = {**spec, "split": name, "examples": o.examples, "class_counts": o.class_counts}
            out[name] = _register(session, settings, src, o.path, f"{stem}.{name}.jsonl", derivation)
    return out, False


def _conversion_plan(
    src: Dataset, template: dict[str, Any] | None, csv_columns: dict[str, Any] | None, delimiter: str | None
) -> dict[str, Any]:
    """How ``src`` converts to chat, as the derivation records it (checked, so bad options fail the request)."""
    try:
        if src.format == "prompt_completion":
            how: dict[str, Any] = {"template": ChatTemplate(**(template or {})).model_dump()}
        elif src.format == "csv" or src.declared_format == "csv":
            columns = csv_columns or (src.options.get("csv") or None)
            if not columns:
                raise InvalidInput("say which CSV columns hold user and assistant text", code="csv_columns_missing")
            how = {"csv_columns": CsvColumns(**columns).model_dump()}
            if delimiter is not None:
                how["delimiter"] = delimiter
        else:
            raise InvalidInput(
                f"dataset {src.id} is {src.format}; only prompt_completion and csv convert to chat",
                code="conversion_unsupported",
            )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"conversion options are not valid: {exc}", code="invalid_conversion") from exc
    return {"kind": "conversion", "to": "chat", **how}


def _run_conversion(settings: Settings, src: Dataset, derivation: dict[str, Any], dst: Path) -> dict[str, Any]:
    """Write the converted file; returns the conversion summary (rows read, examples written, skipped rows)."""
    try:
        if "template" in derivation:
            tpl = ChatTemplate(**derivation["template"])
            result = prompt_completion_to_chat(blob_path(settings, src.sha256), dst, template=tpl)
        else:
            cols = CsvColumns(**derivation["csv_columns"])
            result = csv_to_chat(
                blob_path(settings, src.sha256), dst, columns=cols, delimiter=derivation.get("delimiter")
            )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"conversion options are not valid: {exc}", code="invalid_conversion") from exc
    return result.model_dump(mode="json", exclude={"source", "destination"})


def convert(
    session: Session,
    settings: Settings,
    project_id: str,
    dataset_id: str,
    *,
    template: dict[str, Any] | None,
    csv_columns: dict[str, Any] | None,
    delimiter: str | None,
) -> tuple[Dataset, dict[str, Any] | None, bool]:
    """The converted dataset, the conversion summary, and whether the worker makes the file (a source over the
    inline limit); the summary is then None until the worker is done, and in the dataset's ``derivation.summary``."""
    src = _source(session, project_id, dataset_id)
    derivation = _conversion_plan(src, template, csv_columns, delimiter)
    name = f"{src.filename.rsplit('.', 1)[0]}.chat.jsonl"
    if deferred(settings, src):
        (ds,) = _pending_children(session, src, [(name, derivation)])
        return ds, (ds.derivation or {}).get("summary"), True
    with tempfile.TemporaryDirectory(dir=settings.files_dir / "tmp") as tmp:
        dst = Path(tmp) / "converted.jsonl"
        summary = _run_conversion(settings, src, derivation, dst)
        ds = _register(session, settings, src, dst, name, derivation)
    return ds, summary, False


def produce(session: Session, settings: Settings, ds: Dataset) -> None:
    """Worker step for a pending derived dataset: make its file from the source, exactly as the inline path would.

    Afterwards the dataset has its content address and size and is still ``validating`` (the caller validates it),
    or it is ``invalid`` with a report saying why it could not be made.
    """
    spec = dict(ds.derivation or {})
    src = session.get(Dataset, ds.source_dataset_id) if ds.source_dataset_id else None
    if src is None or src.status != DatasetStatus.ready or not blob_path(settings, src.sha256).exists():
        _fail(session, ds, "derivation_failed", f"the source dataset {ds.source_dataset_id} is no longer available")
        return
    with tempfile.TemporaryDirectory(dir=settings.files_dir / "tmp") as tmp:
        extra: dict[str, Any]
        try:
            if spec.get("kind") == "split":
                name = spec["split"]
                outputs = split_dataset(
                    blob_path(settings, src.sha256),
                    Path(tmp),
                    fractions=spec["fractions"],
                    seed=spec["seed"],
                    stratify_by=spec.get("stratify_by"),
                    only=name,
                )
                path = outputs[name].path
                extra = {"examples": outputs[name].examples, "class_counts": outputs[name].class_counts}
            elif spec.get("kind") == "conversion":
                path = Path(tmp) / "converted.jsonl"
                extra = {"summary": _run_conversion(settings, src, spec, path)}
            else:
                raise InvalidInput(f"unknown derivation {spec.get('kind')!r}", code="invalid_derivation")
        except InvalidInput as exc:
            _fail(session, ds, "derivation_failed", exc.detail)
            return
        staged = stage_file(settings, path)
    same = service.find_by_content(session, ds.project_id, staged.sha256)
    if same is not None and same.id != ds.id:
        # Content is stored once per project: the existing dataset is the one to use.
        staged.discard()
        ds.derivation = {**spec, "duplicate_of": same.id}
        _fail(session, ds, "duplicate_dataset", f"the same content as dataset {same.id} (sha256 {staged.sha256})")
        return
    staged.commit(settings)
    spec.pop("output", None)
    ds.sha256, ds.size_bytes = staged.sha256, staged.size
    ds.derivation = {**spec, **extra}
    session.add(ds)
    session.flush()


def _fail(session: Session, ds: Dataset, code: str, message: str) -> None:
    from service.datasets.validation.engine import failure_report

    service.apply_report(session, ds, failure_report(code, message))


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
        # The version is in the name: a file cached by an older release is rebuilt rather than refused.
        sig = sig_dir / f"{ds.sha256}-{threshold}.v{SIGNATURE_VERSION}.sig"
        if not sig.exists():
            tmp = sig.with_suffix(".tmp")
            build_signature_index(blob_path(settings, ds.sha256), tmp, near_threshold=threshold)
            tmp.replace(sig)
        paths.append(sig)
    result = find_leakage(paths[0], paths[1], threshold=threshold)
    return {"train_dataset_id": train.id, "test_dataset_id": test.id, **result.model_dump(mode="json")}
