from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api_schemas.common import Deleted, Page, problem_responses
from api_schemas.dataset_ops import ConvertRequest, ConvertResponse, LeakageRequest, SplitRequest, SplitResponse
from api_schemas.datasets import DatasetOut, DatasetStatus
from service.api.creating import respond_created
from service.api.deps import CallerDep, IdempotencyKey, SessionDep, SettingsDep
from service.api.multipart import parse_upload
from service.api.pagination import PageParams, page_params, paginate, select_for_project
from service.datasets import derive, service
from service.datasets.models import Dataset
from service.datasets.service import DATASETS
from service.datasets.views import dataset_out
from service.errors import InvalidInput
from service.idempotency.service import fingerprint
from service.work.wake import wake as wake_kind

router = APIRouter(prefix="/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "JSONL or CSV file."},
                        "format": {"type": "string", "enum": list(service.KNOWN_FORMATS)},
                        "model": {"type": "string", "description": "Base model for token limits and cost."},
                        "csv_columns": {
                            "type": "string",
                            "description": 'JSON: {"system": col|null, "user": col, "assistant": col, '
                            '"system_prompt": text|null} for CSV files.',
                        },
                        "metadata": {"type": "string", "description": "JSON object of string pairs."},
                    },
                }
            }
        },
    }
}


def _json_field(fields: dict[str, str], name: str) -> Any:
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"form field {name!r} is not valid JSON: {exc}", code="invalid_field") from exc


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    responses={200: {"model": DatasetOut, "description": "Identical content: the existing dataset."}}
    | problem_responses(401, 409, 413, 422),
    openapi_extra=UPLOAD_BODY,
    summary="Upload a dataset (multipart, streamed)",
)
async def upload_dataset(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    upload = await parse_upload(request, settings)
    assert upload.file is not None
    fields = upload.fields
    csv_columns = _json_field(fields, "csv_columns")
    metadata = _json_field(fields, "metadata") or {}
    if not isinstance(metadata, dict):
        upload.file.discard()
        raise InvalidInput("metadata must be a JSON object", code="invalid_field")
    fmt = fields.get("format") or None

    def create() -> tuple[int, dict[str, Any]]:
        ds, created = service.create_from_staged(
            session,
            settings,
            caller.project_id,
            upload.file,
            filename=upload.filename or "upload",
            declared_format=fmt,
            model=fields.get("model") or None,
            options={"csv": csv_columns} if csv_columns else {},
            metadata=metadata,
        )
        return (201 if created else 200), dataset_out(ds).model_dump(mode="json")

    def wake(body: dict[str, Any]) -> None:
        if body.get("status") == DatasetStatus.validating:
            wake_kind(DATASETS, body["id"])

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/datasets",
        request_fingerprint=fingerprint(upload.file.sha256, fmt, fields.get("model"), csv_columns, metadata),
        create=create,
        after_commit=wake,
    )


@router.get("", response_model=Page[DatasetOut], responses=problem_responses(401))
def list_datasets(
    caller: CallerDep,
    session: SessionDep,
    page: PageParams = Depends(page_params),
    status: DatasetStatus | None = Query(None),
) -> Page[DatasetOut]:
    stmt = select_for_project(Dataset, caller.project_id)
    if status is not None:
        stmt = stmt.where(Dataset.status == status)
    return paginate(session, stmt, Dataset, page, dataset_out)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=problem_responses(401, 404))
def get_dataset(dataset_id: str, caller: CallerDep, session: SessionDep) -> DatasetOut:
    return dataset_out(service.get_dataset(session, caller.project_id, dataset_id))


@router.get(
    "/{dataset_id}/report",
    responses=problem_responses(401, 404, 409),
    summary="The full validation report: every problem with line and field, statistics, cost",
)
def get_report(dataset_id: str, caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    ds = service.get_dataset(session, caller.project_id, dataset_id)
    if ds.report is None:
        from service.errors import Conflict

        raise Conflict("the dataset is still being validated", code="report_not_ready")
    return {"dataset_id": ds.id, "status": ds.status, **ds.report}


@router.delete("/{dataset_id}", response_model=Deleted, responses=problem_responses(401, 404, 409))
def delete_dataset(dataset_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep) -> Deleted:
    service.delete_dataset(session, settings, caller.project_id, dataset_id)
    return Deleted(id=dataset_id, object="dataset")


_DEFERRED = (
    "The source is larger than the inline validation limit: the derived datasets are created `validating` (their "
    "`derivation.output` is `pending` and `sha256` a placeholder) and the worker makes their files, then validates "
    "them; poll the datasets or wait for `dataset.ready` / `dataset.invalid`."
)


def _wake(datasets: list[dict[str, Any]]) -> None:
    for ds in datasets:
        if ds.get("status") == DatasetStatus.validating:
            wake_kind(DATASETS, ds["id"])


@router.post(
    "/{dataset_id}/split",
    status_code=201,
    response_model=SplitResponse,
    responses={202: {"model": SplitResponse, "description": _DEFERRED}} | problem_responses(401, 404, 409, 422),
    summary="Frozen train / validation / test splits (same input and seed give byte-identical files)",
)
def split_dataset(
    dataset_id: str,
    body: SplitRequest,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def create() -> tuple[int, dict[str, Any]]:
        out, later = derive.split(
            session, settings, caller.project_id, dataset_id, dict(body.fractions), body.seed, body.stratify_by
        )
        response = SplitResponse(source_dataset_id=dataset_id, splits={k: dataset_out(v) for k, v in out.items()})
        return (202 if later else 201), response.model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/datasets/{id}/split",
        request_fingerprint=fingerprint(dataset_id, body.model_dump(mode="json")),
        create=create,
        after_commit=lambda response: _wake(list(response["splits"].values())),
    )


@router.post(
    "/{dataset_id}/convert",
    status_code=201,
    response_model=ConvertResponse,
    responses={202: {"model": ConvertResponse, "description": _DEFERRED}} | problem_responses(401, 404, 409, 422),
    summary="Convert a prompt/completion or CSV dataset to chat (a new dataset linked to its source)",
)
def convert_dataset(
    dataset_id: str,
    body: ConvertRequest,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def create() -> tuple[int, dict[str, Any]]:
        ds, summary, later = derive.convert(
            session,
            settings,
            caller.project_id,
            dataset_id,
            template=body.template,
            csv_columns=body.csv_columns,
            delimiter=body.delimiter,
        )
        response = ConvertResponse(dataset=dataset_out(ds), conversion=summary)
        return (202 if later else 201), response.model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/datasets/{id}/convert",
        request_fingerprint=fingerprint(dataset_id, body.model_dump(mode="json")),
        create=create,
        after_commit=lambda response: _wake([response["dataset"]]),
    )


@router.post(
    "/leakage",
    responses=problem_responses(401, 404, 409, 422),
    summary="Exact and near-duplicate overlap between a training and an evaluation dataset",
)
def check_leakage(
    body: LeakageRequest, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    return derive.leakage(
        session, settings, caller.project_id, body.train_dataset_id, body.test_dataset_id, body.threshold
    )
