from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import Timestamps, WorkItem, json_field, ts_field


class WebhookEndpoint(Timestamps, SQLModel, table=True):
    __tablename__ = "webhook_endpoints"

    id: str = Field(default_factory=lambda: new_id("webhook_endpoint"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=500)
    event_types: list[str] = json_field(list)
    secret_ciphertext: str
    previous_secret_ciphertext: str | None = None
    previous_secret_expires_at: datetime | None = ts_field(nullable=True)
    status: str = Field(default="enabled", max_length=16)
    disabled_reason: str | None = None
    failing_since: datetime | None = ts_field(nullable=True)
    exhausted_in_a_row: int = Field(default=0, description="Deliveries in a row that used up all their retries.")


class Delivery(Timestamps, WorkItem, SQLModel, table=True):
    """One event to one endpoint, retried on its schedule; each try is a DeliveryAttempt."""

    __tablename__ = "deliveries"
    __table_args__ = (sa.UniqueConstraint("event_id", "endpoint_id", name="uq_deliveries_event_endpoint"),)

    id: str = Field(default_factory=lambda: new_id("delivery"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    event_id: str = Field(foreign_key="events.id", index=True, max_length=40, ondelete="CASCADE")
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", index=True, max_length=40, ondelete="CASCADE")
    status: str = Field(default="pending", max_length=16, index=True, description="pending | succeeded | failed")
    attempt_count: int = Field(default=0)
    last_status_code: int | None = None


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(foreign_key="deliveries.id", index=True, max_length=40, ondelete="CASCADE")
    attempt: int
    started_at: datetime = ts_field(default_now=True)
    duration_ms: int | None = None
    status_code: int | None = None
    response_excerpt: str | None = None
    error: str | None = None
    details: dict[str, Any] = json_field()
