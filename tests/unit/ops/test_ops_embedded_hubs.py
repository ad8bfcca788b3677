"""`finetune serve` runs two Celery workers in one process; on Redis each must poll its own sockets."""

from __future__ import annotations

from celery import Celery


def _redis_app() -> Celery:
    # Nothing connects while a worker is only constructed, so no Redis server is needed here.
    app = Celery("hub-check", broker="redis://127.0.0.1:1/0", include=["worker.tasks"])
    app.conf.worker_hijack_root_logger = False
    return app


def test_each_embedded_worker_has_its_own_event_loop():
    from kombu.asynchronous import get_event_loop, set_event_loop

    from worker.embedded import EmbeddedWorker

    before = get_event_loop()
    try:
        first = EmbeddedWorker(1, ["default"], name="hub-a", celery_app=_redis_app())
        second = EmbeddedWorker(1, ["train"], name="hub-b", celery_app=_redis_app())
        assert first.controller.hub is not None and second.controller.hub is not None
        # A shared Hub means two threads polling one set of Redis sockets: the worker that loses the race dies.
        assert first.controller.hub is not second.controller.hub
    finally:
        set_event_loop(before)
