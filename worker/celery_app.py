"""The Celery application. Messages are wake-up calls; the database holds the work (see service.work)."""

from __future__ import annotations

from celery import Celery

from service.settings import get_settings

QUEUES = ("default", "webhooks", "train")


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("finetune", broker=settings.broker_url, include=["worker.tasks"])
    # The longest message delay we schedule is a local training run; the broker must not redeliver a message whose
    # task is still running (Redis visibility timeout), so it sits above the training time limit.
    visibility = settings.train_time_limit_s + 3600
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(1, settings.task_time_limit_s - 60),
        task_ignore_result=True,
        task_default_queue="default",
        task_routes={"local.train": {"queue": "train"}, "webhooks.*": {"queue": "webhooks"}},
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": visibility},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


app = make_app()
