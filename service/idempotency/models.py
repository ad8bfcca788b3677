from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from service.modelbase import json_field, ts_field


class IdempotencyRecord(SQLModel, table=True):
    """The stored answer to a creating POST, replayed when the same ``Idempotency-Key`` comes again."""

    __tablename__ = "idempotency_keys"

    project_id: str = Field(foreign_key="projects.id", primary_key=True, max_length=40, ondelete="CASCADE")
    key: str = Field(primary_key=True, max_length=255)
    route: str = Field(max_length=200)
    fingerprint: str = Field(max_length=64)
    status_code: int
    response: dict[str, Any] = json_field()
    created_at: datetime = ts_field(default_now=True, index=True)
