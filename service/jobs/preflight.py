"""Checks before a job is created: the model can be fine-tuned and is still served, and what it will cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from service.datasets.models import Dataset


@dataclass
class Preflight:
    estimated_cost: Decimal | None = None
    price_table_version: str | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)


def preflight(provider: str, model: str, train: Dataset, hyperparameters: dict[str, Any], method: str) -> Preflight:
    return Preflight()
