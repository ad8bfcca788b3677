"""Thin task wrappers: each loads nothing itself and calls one domain function with a row id."""

from __future__ import annotations

from service.settings import get_settings
from worker.celery_app import app


@app.task(name="datasets.validate")
def validate_dataset(dataset_id: str) -> None:
    from service.datasets.service import validate_task

    validate_task(dataset_id, get_settings())


@app.task(name="jobs.advance")
def advance_job(job_id: str) -> None:
    from service.jobs.service import advance

    advance(job_id)


@app.task(name="evaluations.run")
def run_evaluation(evaluation_id: str) -> None:
    from service.evaluations.run import run

    run(evaluation_id)


@app.task(name="events.fanout")
def fanout_event(event_id: str) -> None:
    from service.events.fanout import fanout
    from service.webhooks.dispatch import wake

    if fanout(event_id):
        wake()


@app.task(name="webhooks.dispatch")
def dispatch_webhooks(*_: object) -> None:
    """Sends every due delivery (any arguments are ignored: a wake-up names no row)."""
    from service.webhooks.dispatch import dispatch_due

    dispatch_due()


@app.task(name="webhooks.deliver")
def deliver_webhook(delivery_id: str) -> None:
    """One delivery, blocking; kept for messages sent before the dispatcher existed."""
    from service.webhooks.delivery import deliver

    deliver(delivery_id)


@app.task(
    name="local.train",
    time_limit=get_settings().train_time_limit_s,
    soft_time_limit=get_settings().train_time_limit_s - 60,
)
def train_local(job_id: str) -> str:
    from service.providers.local_runner import run

    return run(job_id)
