"""``/v1/models`` as OpenAI's SDK calls it: the base models this project can train or call, and its fine-tunes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api_schemas.openai_compat import OpenAIErrorResponse, OpenAIModel, OpenAIModelDeleted, OpenAIModelList
from service import catalog
from service.api.deps import CallerDep, SessionDep, SettingsDep

router = APIRouter(prefix="/models", tags=["openai-compatible"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorResponse, "description": "OpenAI's error shape."} for code in (400, 401, 404)
}


def _out(model: catalog.CatalogModel) -> OpenAIModel:
    return OpenAIModel(id=model.id, created=model.created, owned_by=model.owned_by)


@router.get("", response_model=OpenAIModelList, responses=ERRORS, summary="List models")
def list_models(caller: CallerDep, session: SessionDep, settings: SettingsDep) -> OpenAIModelList:
    return OpenAIModelList(data=[_out(m) for m in catalog.list_models(session, caller.project_id, settings)])


# Model names contain '/' (Hugging Face ids) and ':' (fine-tunes): the path parameter takes the rest of the path.
@router.get("/{model:path}", response_model=OpenAIModel, responses=ERRORS, summary="Retrieve a model")
def retrieve_model(model: str, caller: CallerDep, session: SessionDep, settings: SettingsDep) -> OpenAIModel:
    return _out(catalog.get_model(session, caller.project_id, model, settings))


@router.delete("/{model:path}", response_model=OpenAIModelDeleted, responses=ERRORS, summary="Delete a fine-tune")
def delete_model(model: str, caller: CallerDep, session: SessionDep) -> OpenAIModelDeleted:
    return OpenAIModelDeleted(id=catalog.delete_fine_tune(session, caller.project_id, model), deleted=True)
