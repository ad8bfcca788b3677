from __future__ import annotations

from fastapi import APIRouter

from api_schemas.common import problem_responses
from service.api.deps import CallerDep
from service.datasets.validation import RULES_VERSION, list_rules

router = APIRouter(tags=["datasets"])


@router.get(
    "/dataset-rules",
    responses=problem_responses(401),
    summary="Every validation rule: stable code, severity, what it checks and how to fix it",
)
def dataset_rules(_: CallerDep) -> dict[str, object]:
    return {"rules_version": RULES_VERSION, "data": [r.model_dump(mode="json") for r in list_rules()]}
