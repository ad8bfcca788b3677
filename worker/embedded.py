"""Run a Celery worker inside the current process (in a thread), for the all-in-one ``finetune serve`` and tests.

With the in-memory broker the producer in the API and this worker share the process's queues; nothing else runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from worker.celery_app import QUEUES, app

log = logging.getLogger(__name__)


class EmbeddedWorker:
    def __init__(self, concurrency: int = 2, queues: Sequence[str] = QUEUES) -> None:
        import worker.tasks  # noqa: F401  registers the tasks

        self._ready = threading.Event()
        self.controller = app.WorkController(
            pool_cls="threads",
            concurrency=concurrency,
            queues=list(queues),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
            ready_callback=lambda *_: self._ready.set(),
            hostname=f"embedded-{threading.get_ident()}@localhost",
        )
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.thread = threading.Thread(target=self.controller.start, name="celery-worker", daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded worker did not start")

    def stop(self) -> None:
        try:
            self.controller.stop(in_sighandler=False)
        except Exception:
            log.debug("worker stop raised", exc_info=True)
        if self.thread is not None:
            self.thread.join(timeout=10)
