from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api_schemas.common import RequestModel


class WebhookEndpointCreate(RequestModel):
    url: str = Field(min_length=1, max_length=2000, description="https URL that receives events.")
    event_types: list[str] = Field(
        default_factory=list, description="Event types to send ('job.*' style prefixes allowed); empty: all."
    )
    description: str = Field(default="", max_length=500)


class WebhookEndpointUpdate(RequestModel):
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    event_types: list[str] | None = None
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(default=None, description="false disables, true re-enables.")


class WebhookEndpointOut(BaseModel):
    object: str = "webhook_endpoint"
    id: str
    url: str
    description: str
    event_types: list[str]
    status: str
    disabled_reason: str | None = None
    failing_since: datetime | None = None
    previous_secret_expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointOut):
    secret: str = Field(description="whsec_ signing secret. Shown only in this response.")


class DeliveryAttemptOut(BaseModel):
    object: str = "webhook_delivery_attempt"
    id: int
    delivery_id: str
    event_id: str
    event_type: str
    attempt: int
    started_at: datetime
    duration_ms: int | None = None
    status_code: int | None = None
    response_excerpt: str | None = None
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class RedeliverOut(BaseModel):
    event_id: str
    deliveries: list[str]
