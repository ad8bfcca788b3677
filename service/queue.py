"""Enqueue work by task name (``service.work.names``). The service never imports the worker package; messages are only
wake-up calls (``service.work.wake`` sends a row's task to its queue)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery

from service.settings import get_settings
from service.work.names import DEFAULT_QUEUE

log = logging.getLogger(__name__)

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


def enqueue(task: str, *args: Any, queue: str = DEFAULT_QUEUE) -> bool:
    """Send a task message. Failure is logged, not raised: the sweeper will send it again from the database."""
    try:
        producer().send_task(task, args=list(args), queue=queue)
        return True
    except Exception:  # broker down: the row is still due in the database
        log.warning("could not enqueue %s%s; the sweeper will retry", task, args, exc_info=True)
        return False
