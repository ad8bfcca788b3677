"""Run a Celery worker inside the current process (in a thread), for the all-in-one ``finetune serve`` and tests.

With the in-memory broker the producer in the API and this worker share the process's queues; nothing else runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from celery import Celery
from kombu.asynchronous import set_event_loop

from service.work.names import DEVICE_QUEUE, QUEUES
from worker.celery_app import app, make_app

log = logging.getLogger(__name__)


class EmbeddedWorker:
    def __init__(
        self,
        concurrency: int = 2,
        queues: Sequence[str] = QUEUES,
        *,
        name: str = "embedded",
        celery_app: Celery | None = None,
    ) -> None:
        import worker.tasks  # noqa: F401  registers the tasks

        self._ready = threading.Event()
        # Celery's Hub step reuses kombu's process-global event loop when one is set, so a second worker in this
        # process would run its loop on the first one's Hub: two threads polling the same Redis sockets, one reading
        # what the other was woken for (EAGAIN, reconnects, an "Unrecoverable error" that kills the worker). Clearing
        # it gives every embedded worker a Hub of its own. The in-memory broker has no Hub, so only Redis showed it.
        set_event_loop(None)
        self.controller = (celery_app or app).WorkController(
            pool_cls="threads",
            concurrency=concurrency,
            queues=list(queues),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
            ready_callback=lambda *_: self._ready.set(),
            hostname=f"{name}-{threading.get_ident()}@localhost",
        )
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.thread = threading.Thread(target=self.controller.start, name="celery-worker", daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded worker did not start")

    def stop(self, timeout: float = 10.0) -> bool:
        """Warm shutdown, bounded: take no more messages, give running tasks ``timeout`` seconds to finish.

        Returns whether the worker stopped. A task still running after that is abandoned when the process exits; its
        row keeps its lease and the sweeper sends it again once the lease expires (a Redis broker also redelivers the
        unacknowledged message: acks_late), so nothing is lost, only delayed.
        """
        deadline = time.monotonic() + timeout
        # The thread pool's warm stop waits for running tasks without a limit, so it runs beside us, not in our way.
        stopper = threading.Thread(target=self._warm_stop, name="celery-worker-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if self.thread is not None:
            self.thread.join(max(0.0, deadline - time.monotonic()))
        stopped = not stopper.is_alive() and not (self.thread is not None and self.thread.is_alive())
        if stopped:
            log.info("worker %s stopped", self.controller.hostname)
        else:
            log.warning(
                "worker %s still runs tasks after %.0f s; leaving them to be re-leased",
                self.controller.hostname,
                timeout,
            )
        return stopped

    def _warm_stop(self) -> None:
        try:
            self.controller.stop(in_sighandler=False)
        except Exception:
            log.debug("worker stop raised", exc_info=True)


def embedded_workers(concurrency: int) -> list[EmbeddedWorker]:
    """`finetune serve`'s workers: a pool of `concurrency` threads for every queue but ``train``, and one thread for
    ``train``, so two local trainings never share the device and a training never holds a thread other tasks need.

    The training worker gets its own Celery app: a WorkController selects its queues on its app (``app.amqp.queues``),
    so two on one app would consume the same queues. Tasks are shared, so the second app knows them all.
    """
    train = EmbeddedWorker(1, [DEVICE_QUEUE], name="embedded-train", celery_app=make_app())
    app.set_current()  # creating an app makes it the current one; the main app stays current
    return [EmbeddedWorker(concurrency, [q for q in QUEUES if q != DEVICE_QUEUE]), train]
