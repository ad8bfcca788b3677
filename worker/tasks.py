"""Thin task wrappers: each loads nothing itself and calls one domain function with a row id. Task names come from
``service.work.names``, where the service enqueues by them."""

from __future__ import annotations

from service.settings import get_settings
from service.work import names
from worker.celery_app import app


@app.task(name=names.VALIDATE_DATASET)
def validate_dataset(dataset_id: str) -> None:
    from service.datasets.service import validate_task

    validate_task(dataset_id, get_settings())


@app.task(name=names.ADVANCE_JOB)
def advance_job(job_id: str) -> None:
    from service.jobs.steps import advance

    advance(job_id)


@app.task(name=names.RUN_EVALUATION)
def run_evaluation(evaluation_id: str) -> None:
    from service.evaluations.run import run

    run(evaluation_id)


@app.task(name=names.ADVANCE_DISTILL_RUN)
def advance_distill_run(run_id: str) -> None:
    from service.distill.generate import advance

    advance(run_id)


@app.task(name=names.ADVANCE_DISTILLATION)
def advance_distillation(distillation_id: str) -> None:
    from service.distill.recipe import advance

    advance(distillation_id)


@app.task(name=names.FANOUT_EVENT)
def fanout_event(event_id: str) -> None:
    from service.events.fanout import fanout
    from service.webhooks.dispatch import wake

    if fanout(event_id):
        wake()


@app.task(name=names.DISPATCH_WEBHOOKS)
def dispatch_webhooks(*_: object) -> None:
    """Sends every due delivery (any arguments are ignored: a wake-up names no row)."""
    from service.webhooks.dispatch import dispatch_due

    dispatch_due()


@app.task(
    name=names.TRAIN_LOCAL,
    time_limit=get_settings().train_time_limit_s,
    soft_time_limit=get_settings().train_time_limit_s - 60,
)
def train_local(job_id: str) -> str:
    from service.providers.local_runner import run

    return run(job_id)
