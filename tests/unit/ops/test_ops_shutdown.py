"""Graceful shutdown: `finetune serve` drains on SIGTERM, stops its sweeper and workers, exits 0; a worker whose task
does not finish in time is left behind (its row is re-leased later) instead of holding the shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from helpers import wait_for

SHUTDOWN_BOUND_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path):
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")},
        "FINETUNE_DATA_DIR": str(tmp_path / "data"),
        "FINETUNE_PORT": str(port),
        "FINETUNE_SECRET_KEY": "shutdown-test-secret-0123456789",
        "FINETUNE_BROKER_URL": "memory://",
        "FINETUNE_SWEEP_INTERVAL_S": "0.2",
    }
    exe = Path(sys.executable).with_name("finetune")
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:

            def healthy() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    assert proc.poll() is None, log_path.read_text()
                    return False

            wait_for(healthy, timeout=60, interval=0.2)
            # Some work through the API while it runs: a project and a few requests.
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=SHUTDOWN_BOUND_S + 10)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = log_path.read_text()
    assert code == 0, out
    assert took < SHUTDOWN_BOUND_S, (took, out)
    assert "sweeper stopped" in out, out
    # Both embedded workers (the general one and the train queue's) stopped by warm shutdown, none left running.
    stopped = [line for line in out.splitlines() if "worker.embedded" in line and line.endswith(" stopped")]
    assert len(stopped) >= 1, out
    assert "still runs tasks" not in out, out


def test_worker_stop_is_bounded_when_a_task_does_not_finish():
    """A warm stop waits for running tasks without a limit; ours gives up after ``timeout`` and says so."""
    from worker.embedded import EmbeddedWorker

    release = threading.Event()

    class StuckController:
        hostname = "stuck@localhost"

        def stop(self, in_sighandler: bool = False) -> None:
            release.wait(30)  # what the thread pool's warm stop does while a task runs

    w = EmbeddedWorker(1, ["default"], name="ops-test")
    w.controller = StuckController()  # type: ignore[assignment]
    try:
        started = time.monotonic()
        assert w.stop(timeout=0.5) is False
        assert time.monotonic() - started < 5
    finally:
        release.set()
    # And a stop that completes in time reports it.
    assert w.stop(timeout=5) is True


def test_sweeper_stop_joins_its_thread():
    from worker.sweeper import Sweeper

    sw = Sweeper(interval_s=30.0)
    sw.sweep_once = lambda: 0  # type: ignore[method-assign]  (no database here: only the loop is under test)
    t = sw.start_thread()
    started = time.monotonic()
    sw.stop()
    assert not t.is_alive() and time.monotonic() - started < 5
