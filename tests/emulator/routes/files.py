"""/v1/files: upload (multipart), list, retrieve, content, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from .. import params
from ..errors import invalid, not_found
from ..pagination import paginate
from ..store import FileRecord
from .common import core_of, limit_param, page, respond

router = APIRouter()

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
JSONL_ONLY = {"fine-tune": "Fine-Tuning", "batch": "Batch"}


def _get(request: Request, file_id: str) -> FileRecord:
    record = core_of(request).store.files.get(file_id)
    if record is None:
        raise not_found(f"No such File object: {file_id}", param="id")
    return record


@router.post("/v1/files")
async def upload(request: Request) -> Response:
    core = core_of(request)
    # Closing the form removes the spooled temporary file behind the upload.
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise params.missing("file")
        if not isinstance(purpose, str):
            raise params.missing("purpose")
        params.one_of("purpose", purpose, UPLOAD_PURPOSES)
        filename = upload.filename or "upload"
        if purpose in JSONL_ONLY and not filename.lower().endswith(".jsonl"):
            raise invalid(f"Invalid file format for {JSONL_ONLY[purpose]} API. Must be .jsonl", param="file")
        content = await upload.read()
    azure = core.config.azure
    if azure is not None and azure.require_bom and purpose == "fine-tune" and not content.startswith(b"\xef\xbb\xbf"):
        raise invalid(
            "Training files must be JSONL encoded in UTF-8 with a byte-order mark (BOM).",
            param="file",
            code="invalid_file_encoding",
        )
    limit = core.config.max_file_bytes
    if len(content) > limit:
        raise invalid(
            f"File is too large: {len(content)} bytes. The maximum size for a file uploaded to /v1/files is "
            f"{limit / (1024 * 1024):g} MB; use the Uploads API (/v1/uploads) for files up to 8 GB.",
            param="file",
            code="file_too_large",
        )
    with core.store.lock:
        record = FileRecord(
            id=core.ids.new("file"),
            filename=filename,
            purpose=purpose,
            content=content,
            created_at=int(core.clock.now()),
        )
        core.store.files[record.id] = record
        return respond(record.to_api())


@router.get("/v1/files")
async def list_files(request: Request) -> Response:
    core = core_of(request)
    limit = limit_param(request, default=10000, maximum=10000)
    order = params.one_of("order", request.query_params.get("order", "desc"), ("asc", "desc"))
    purpose = request.query_params.get("purpose")
    after = request.query_params.get("after")
    with core.store.lock:
        records = [f for f in core.store.files.values() if purpose is None or f.purpose == purpose]
        if order == "desc":
            records.reverse()
        chosen, has_more = paginate(records, after, limit)
        return respond(page([f.to_api() for f in chosen], has_more))


@router.get("/v1/files/{file_id}")
async def retrieve(request: Request, file_id: str) -> Response:
    with core_of(request).store.lock:
        return respond(_get(request, file_id).to_api())


@router.get("/v1/files/{file_id}/content")
async def content(request: Request, file_id: str) -> Response:
    with core_of(request).store.lock:
        record = _get(request, file_id)
        return Response(record.content, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def delete(request: Request, file_id: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        _get(request, file_id)
        del core.store.files[file_id]
        return respond({"id": file_id, "object": "file", "deleted": True})
