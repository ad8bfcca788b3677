from __future__ import annotations

from fastapi import APIRouter

from api_schemas.dataset_report import RuleDoc
from service.datasets.validation import RULES_VERSION, list_rules

router = APIRouter(tags=["datasets"])


@router.get("/dataset-rules", summary="Every validation rule: stable code, severity, what it checks and how to fix it")
def dataset_rules() -> dict[str, object]:
    rules: list[RuleDoc] = list_rules()
    return {"rules_version": RULES_VERSION, "data": [r.model_dump(mode="json") for r in rules]}
