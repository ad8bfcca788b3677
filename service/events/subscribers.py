"""Reactions inside the service to its own events (besides webhooks), run by the fan-out of each event.

A subscriber runs in the fan-out's transaction with ``(session, event)``: it commits with the event's deliveries, and
if it raises, the fan-out backs off and runs again (bounded like every step), so a subscriber must be idempotent. The
table names subscribers by module path, so the events package imports nothing above it; a path is imported on first
use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache

from sqlmodel import Session

from service.events.models import Event

Subscriber = Callable[[Session, Event], None]

SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    # A job that asked for an evaluation gets it when it succeeds.
    "job.succeeded": (
        "service.evaluations.service:evaluation_for_job_event",
        "service.distill.recipe:wake_on_child_end",
    ),
    # A distillation waiting on one of its steps goes on when it ends.
    "job.failed": ("service.distill.recipe:wake_on_child_end",),
    "job.cancelled": ("service.distill.recipe:wake_on_child_end",),
    "evaluation.succeeded": ("service.distill.recipe:wake_on_child_end",),
    "evaluation.failed": ("service.distill.recipe:wake_on_child_end",),
    "evaluation.cancelled": ("service.distill.recipe:wake_on_child_end",),
    "dataset.ready": ("service.distill.recipe:wake_on_child_end",),
    "dataset.invalid": ("service.distill.recipe:wake_on_child_end",),
}


@cache
def _load(path: str) -> Subscriber:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def subscribers(event_type: str) -> list[Subscriber]:
    return [_load(path) for path in SUBSCRIPTIONS.get(event_type, ())]


def notify(session: Session, event: Event) -> None:
    for subscriber in subscribers(event.type):
        subscriber(session, event)
