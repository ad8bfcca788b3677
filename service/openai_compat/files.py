"""``/v1/files`` as OpenAI's SDK calls it, backed by our datasets (a file is a dataset, validated the same way)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from sqlmodel import select

from api_schemas.openai_compat import OpenAIErrorResponse, OpenAIFile, OpenAIFileDeleted, OpenAIFileList
from service.api.creating import respond_created
from service.api.deps import CallerDep, IdempotencyKey, SessionDep, SettingsDep
from service.api.multipart import parse_upload
from service.datasets import service as datasets
from service.datasets.models import Dataset
from service.datasets.service import DATASETS
from service.datasets.storage import blob_path
from service.errors import InvalidInput
from service.idempotency.service import fingerprint
from service.openai_compat.shapes import FILE_PURPOSE, file_out
from service.work.wake import wake

router = APIRouter(prefix="/files", tags=["openai-compatible"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorResponse, "description": "OpenAI's error shape."} for code in (400, 401, 404, 409, 413)
}

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "A JSONL training file."},
                        "purpose": {"type": "string", "enum": [FILE_PURPOSE]},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    response_model=OpenAIFile,
    responses=ERRORS,
    openapi_extra=UPLOAD_BODY,
    summary="Upload a file (OpenAI's files.create; purpose fine-tune)",
)
async def create_file(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    upload = await parse_upload(request, settings)
    assert upload.file is not None
    purpose = upload.fields.get("purpose")
    if purpose != FILE_PURPOSE:
        upload.file.discard()
        raise InvalidInput(
            f"purpose must be '{FILE_PURPOSE}' (this server keeps training files only), got {purpose!r}",
            code="invalid_purpose",
            param="purpose",
        )

    def create() -> tuple[int, dict[str, Any]]:
        ds, _created = datasets.create_from_staged(
            session,
            settings,
            caller.project_id,
            upload.file,
            filename=upload.filename or "upload.jsonl",
            declared_format=None,
            model=None,
            options={},
            metadata={},
        )
        # OpenAI answers 200 to every upload; identical content is the same file here (content addressing).
        return 200, file_out(ds).model_dump(mode="json")

    def validate_later(body: dict[str, Any]) -> None:
        if body.get("status") == "uploaded":
            wake(DATASETS, body["id"])

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/files",
        request_fingerprint=fingerprint(upload.file.sha256, upload.filename),
        create=create,
        after_commit=validate_later,
    )


@router.get("", response_model=OpenAIFileList, responses=ERRORS, summary="List files (OpenAI's files.list)")
def list_files(
    caller: CallerDep,
    session: SessionDep,
    purpose: str | None = Query(None, max_length=64),
    limit: int = Query(10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = Query("desc"),
    after: str | None = Query(None, max_length=100),
) -> OpenAIFileList:
    if purpose is not None and purpose != FILE_PURPOSE:
        return OpenAIFileList(data=[], has_more=False)
    stmt = select(Dataset).where(Dataset.project_id == caller.project_id)
    # Ids are time-ordered, so "after this id" in either order is a comparison on the id.
    if after:
        stmt = stmt.where(Dataset.id < after if order == "desc" else Dataset.id > after)
    stmt = stmt.order_by(Dataset.id.desc() if order == "desc" else Dataset.id.asc()).limit(limit + 1)
    rows = list(session.exec(stmt))
    data = [file_out(ds) for ds in rows[:limit]]
    return OpenAIFileList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=len(rows) > limit,
    )


@router.get("/{file_id}", response_model=OpenAIFile, responses=ERRORS, summary="Retrieve a file")
def retrieve_file(file_id: str, caller: CallerDep, session: SessionDep) -> OpenAIFile:
    return file_out(datasets.get_dataset(session, caller.project_id, file_id))


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}} | ERRORS,
    summary="The file's bytes, as uploaded",
)
def file_content(file_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep) -> FileResponse:
    ds = datasets.get_dataset(session, caller.project_id, file_id)
    return FileResponse(blob_path(settings, ds.sha256), media_type="application/octet-stream", filename=ds.filename)


@router.delete("/{file_id}", response_model=OpenAIFileDeleted, responses=ERRORS, summary="Delete a file")
def delete_file(file_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep) -> OpenAIFileDeleted:
    datasets.delete_dataset(session, settings, caller.project_id, file_id)
    return OpenAIFileDeleted(id=file_id, deleted=True)
