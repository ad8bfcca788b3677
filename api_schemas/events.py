from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class EventType(StrEnum):
    dataset_ready = "dataset.ready"
    dataset_invalid = "dataset.invalid"
    job_running = "job.running"
    job_succeeded = "job.succeeded"
    job_failed = "job.failed"
    job_cancelled = "job.cancelled"
    job_paused = "job.paused"
    evaluation_succeeded = "evaluation.succeeded"
    evaluation_failed = "evaluation.failed"
    evaluation_cancelled = "evaluation.cancelled"
    distillation_succeeded = "distillation.succeeded"
    distillation_failed = "distillation.failed"
    distillation_cancelled = "distillation.cancelled"
    review_queue_completed = "review_queue.completed"
    endpoint_disabled = "webhook_endpoint.disabled"
    ping = "ping"


class EventData(BaseModel):
    object: dict[str, Any]


class EventOut(BaseModel):
    """The envelope delivered to webhook endpoints and listed by ``GET /v1/events``."""

    id: str
    type: str
    created_at: datetime
    data: EventData
