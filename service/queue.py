"""Enqueue work by task name. The service never imports the worker package; messages are only wake-up calls."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery

from service.settings import get_settings

log = logging.getLogger(__name__)

# The queue whose worker runs one task at a time on the machine's accelerator (or CPU): local trainings, and
# evaluations that run a model locally, so the two never share the device.
DEVICE_QUEUE = "train"

_app: Celery | None = None
_lock = threading.Lock()


def producer() -> Celery:
    """A send-only Celery app on the configured broker (the in-memory transport is shared within a process)."""
    global _app
    with _lock:
        if _app is None:
            settings = get_settings()
            _app = Celery("finetune-producer", broker=settings.broker_url, set_as_current=False)
            _app.conf.broker_connection_retry_on_startup = True
            _app.conf.broker_transport_options = {"visibility_timeout": settings.train_time_limit_s + 3600}
        return _app


def reset_producer() -> None:
    global _app
    with _lock:
        _app = None


def enqueue(task: str, *args: Any, queue: str = "default") -> bool:
    """Send a task message. Failure is logged, not raised: the sweeper will send it again from the database."""
    try:
        producer().send_task(task, args=list(args), queue=queue)
        return True
    except Exception:  # broker down: the row is still due in the database
        log.warning("could not enqueue %s%s; the sweeper will retry", task, args, exc_info=True)
        return False
