"""/v1/models: base models with their shutdown dates, and the fine-tuned models this emulator produced."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..errors import ApiError
from .common import core_of, respond

router = APIRouter(prefix="/v1/models")


def _missing(name: str) -> ApiError:
    return ApiError(
        404,
        f"The model '{name}' does not exist",
        param="model",
        code="model_not_found",
    )


@router.get("")
async def list_models(request: Request) -> Response:
    core = core_of(request)
    with core.store.lock:
        return respond({"object": "list", "data": [m.to_api() for m in core.catalog.listed(core.store)]})


@router.get("/{model:path}")
async def retrieve(request: Request, model: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        resolved = core.catalog.resolve(model, core.store)
        if resolved is None:
            raise _missing(model)
        body = resolved.to_api()
        body["id"] = model  # an alias is answered under the name asked for, as OpenAI does
        return respond(body)


@router.delete("/{model:path}")
async def delete(request: Request, model: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        tuned = core.store.fine_tuned_models.get(model)
        if tuned is None or tuned.checkpoint:
            if core.catalog.base(model) is not None:
                raise ApiError(
                    403, "You have insufficient permissions for this operation.", type="invalid_request_error"
                )
            raise _missing(model)
        del core.store.fine_tuned_models[model]
        return respond({"id": model, "object": "model", "deleted": True})
