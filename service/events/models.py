from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import WorkItem, json_field, ts_field


class Event(WorkItem, SQLModel, table=True):
    """The outbox: written in the same transaction as the change it reports, fanned out to endpoints afterwards.

    ``next_run_at`` is set while the event still has to be fanned out into deliveries.
    """

    __tablename__ = "events"

    id: str = Field(default_factory=lambda: new_id("event"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    type: str = Field(max_length=64, index=True)
    created_at: datetime = ts_field(default_now=True, index=True)
    data: dict[str, Any] = json_field()
