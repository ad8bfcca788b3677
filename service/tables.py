"""Imports every table so ``SQLModel.metadata`` is complete (Alembic and tests use it)."""

from sqlmodel import SQLModel

from service.datasets.models import Dataset
from service.distill.models import Distillation, DistillRun
from service.evaluations.models import Evaluation, EvaluationSample
from service.events.models import Event
from service.idempotency.models import IdempotencyRecord
from service.jobs.models import Job, JobCheckpoint, JobEvent
from service.projects.models import ApiKey, Project
from service.providers.models import ProviderCredential, ProviderFile
from service.reviews.models import ReviewItem, ReviewQueue, ReviewRating, ReviewRatingRevision
from service.webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint

metadata = SQLModel.metadata

__all__ = [
    "ApiKey",
    "Dataset",
    "Delivery",
    "DeliveryAttempt",
    "DistillRun",
    "Distillation",
    "Evaluation",
    "EvaluationSample",
    "Event",
    "IdempotencyRecord",
    "Job",
    "JobCheckpoint",
    "JobEvent",
    "Project",
    "ProviderCredential",
    "ProviderFile",
    "ReviewItem",
    "ReviewQueue",
    "ReviewRating",
    "ReviewRatingRevision",
    "WebhookEndpoint",
    "metadata",
]
