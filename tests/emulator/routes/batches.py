"""/v1/batches: create, list, retrieve, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from .. import batches
from ..pagination import paginate
from .common import core_of, json_body, limit_param, page, respond

router = APIRouter(prefix="/v1/batches")


@router.post("")
async def create(request: Request) -> Response:
    core = core_of(request)
    body = await json_body(request)
    with core.store.lock:
        return respond(batches.create(core, body).to_api())


@router.get("")
async def list_batches(request: Request) -> Response:
    core = core_of(request)
    limit = limit_param(request, default=20, maximum=100)
    after = request.query_params.get("after")
    with core.store.lock:
        chosen, has_more = paginate(list(reversed(core.store.batches.values())), after, limit)
        return respond(page([b.to_api() for b in chosen], has_more))


@router.get("/{batch_id}")
async def retrieve(request: Request, batch_id: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        return respond(batches.get(core, batch_id).to_api())


@router.post("/{batch_id}/cancel")
async def cancel(request: Request, batch_id: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        batch = batches.get(core, batch_id)
        batches.cancel(core, batch)
        return respond(batch.to_api())
