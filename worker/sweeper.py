"""The sweeper: finds rows that are due or whose worker died (expired lease) and sends their task again.

It is what makes queue messages disposable: flush the broker, kill a worker, run with an in-process broker that
forgets everything on restart, and the work is found again here from the database.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from service import queue
from service.db import session_scope
from service.settings import get_settings
from service.work.batch import due_rows
from service.work.kind import WorkKind
from service.work.kinds import WORK_KINDS

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, interval_s: float | None = None, requeue_after_s: float | None = None) -> None:
        settings = get_settings()
        self.interval_s = interval_s if interval_s is not None else settings.sweep_interval_s
        self.requeue_after_s = requeue_after_s if requeue_after_s is not None else settings.requeue_after_s
        # When we last sent each row: a due row waiting in the queue is not sent again until requeue_after_s passed.
        self._sent: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> int:
        now = time.monotonic()
        sent = 0
        with session_scope() as session:
            due = [(kind, row_id, row_queue) for kind in WORK_KINDS for row_id, row_queue in due_rows(session, kind)]
        batches: dict[WorkKind, list[tuple[str, str]]] = {}
        for kind, row_id, row_queue in due:
            key = (kind.name, row_id)
            last = self._sent.get(key)
            if last is not None and now - last < self.requeue_after_s:
                continue
            if kind.batched:
                batches.setdefault(kind, []).append(key)
            elif queue.enqueue(kind.task, row_id, queue=row_queue):
                self._sent[key] = now
                sent += 1
        # One wake-up serves every newly due (or long-waiting) row of a batched kind: a backlog of thousands of
        # deliveries is one message, and rows already announced are not announced again before requeue_after_s.
        for kind, keys in batches.items():
            if queue.enqueue(kind.task, queue=kind.queue):
                self._sent.update(dict.fromkeys(keys, now))
                sent += 1
        # Forget rows not due any more so the map stays small.
        due_keys = {(k.name, r) for k, r, _ in due}
        self._sent = {k: v for k, v in self._sent.items() if k in due_keys}
        return sent

    def run(self, heartbeat: Path | None = None) -> None:
        """Sweep until stopped. ``heartbeat`` is touched after every good sweep (container health checks read it)."""
        log.info("sweeper running every %.1fs", self.interval_s)
        while not self._stop.is_set():
            try:
                n = self.sweep_once()
                if n:
                    log.debug("sweeper enqueued %d rows", n)
                if heartbeat is not None:
                    heartbeat.touch()
            except Exception:
                log.exception("sweep failed; trying again")
            self._stop.wait(self.interval_s)
        log.info("sweeper stopped")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the sweep in progress (a sweep only reads rows and sends messages: safe to cut short too)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def start_thread(self) -> threading.Thread:
        t = self._thread = threading.Thread(target=self.run, name="sweeper", daemon=True)
        t.start()
        return t
