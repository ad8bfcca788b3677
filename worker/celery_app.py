"""The Celery application. Messages are wake-up calls; the database holds the work (see service.work)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery import Celery, signals

from service import metrics
from service.settings import get_settings
from service.work.names import DEFAULT_QUEUE, DEVICE_QUEUE, TRAIN_LOCAL, WEBHOOKS_QUEUE


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
        task_default_queue=DEFAULT_QUEUE,
        task_routes={TRAIN_LOCAL: {"queue": DEVICE_QUEUE}, "webhooks.*": {"queue": WEBHOOKS_QUEUE}},
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


# Task metrics (service.metrics). Signals are process-wide, so they count the tasks of every app in this process
# (``finetune serve`` runs two). Start times are kept per task id: with the threads pool several run at once.
_started: dict[str, float] = {}
_started_lock = threading.Lock()
_FINAL_STATES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried", "REJECTED": "rejected"}


@signals.task_prerun.connect
def _task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    with _started_lock:
        _started[task_id or ""] = time.perf_counter()
    metrics.task_started(getattr(task, "name", "unknown"))


@signals.task_postrun.connect
def _task_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    with _started_lock:
        started = _started.pop(task_id or "", None)
    seconds = time.perf_counter() - started if started is not None else None
    metrics.task_finished(
        getattr(task, "name", "unknown"), _FINAL_STATES.get(state or "", (state or "unknown").lower()), seconds
    )


@signals.task_revoked.connect
def _task_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    # A revoked task that never started has no postrun; one terminated while running gets no postrun either.
    task_id = getattr(request, "id", None) or ""
    with _started_lock:
        started = _started.pop(task_id, None)
    seconds = time.perf_counter() - started if started is not None else None
    metrics.task_finished(getattr(sender, "name", None) or "unknown", "revoked", seconds)


@signals.worker_process_shutdown.connect
def _child_exit(**_: Any) -> None:
    # Prefork child gone: its live gauges must not count any more (multiprocess mode only).
    metrics.mark_process_dead(os.getpid())
