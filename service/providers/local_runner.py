"""The ``local.train`` task body: run one local job's training in this worker, writing its run folder.

Safe to deliver twice: a file lock lets one trainer work on a run at a time, a finished run is not trained again, and
an interrupted one resumes from its last checkpoint (the trainer does both).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

from service.datasets.storage import blob_path
from service.providers.local_provider import HEARTBEAT_S, read_json, runs_dir, write_json
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)
CANCEL_POLL_S = 1.0


def _blob(settings: Settings, file_id: str | None) -> Any:
    if not file_id:
        return None
    return blob_path(settings, file_id.removeprefix("sha256:"))


def run(job_id: str, settings: Settings | None = None) -> str:
    """Train the run; returns its final status (or ``busy`` when another trainer holds it)."""
    from service.providers.local import LocalTrainingError, LocalTrainParams, train

    settings = settings or get_settings()
    if settings.hf_offline:
        # transformers and peft otherwise try the Hub even for local folders (and wait on DNS where there is none).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_dir = runs_dir(settings) / job_id
    spec = read_json(run_dir / "spec.json")
    if spec is None:
        log.warning("local.train for unknown run %s", job_id)
        return "missing"
    lock_file = (run_dir / "lock").open("w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        return "busy"
    try:
        current = (read_json(run_dir / "status.json") or {}).get("status")
        if current in ("succeeded", "failed", "cancelled"):
            return str(current)
        state: dict[str, Any] = {"status": "running", "heartbeat": time.time(), "started_at": time.time()}
        write_json(run_dir / "status.json", state)
        stop_beat = threading.Event()

        def beat() -> None:
            while not stop_beat.wait(HEARTBEAT_S):
                state["heartbeat"] = time.time()
                write_json(run_dir / "status.json", state)

        threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True).start()
        events = (run_dir / "events.jsonl").open("a")
        last_check = [0.0, False]

        def on_event(ev: Any) -> None:
            record = {"time": datetime.now(UTC).isoformat(), **ev.model_dump(mode="json")}
            events.write(json.dumps(record) + "\n")
            events.flush()

        def should_stop() -> bool:
            # Polled before every micro-batch; the filesystem is asked at most once a second.
            now = time.monotonic()
            if now - last_check[0] >= CANCEL_POLL_S:
                last_check[0], last_check[1] = now, (run_dir / "cancel").exists()
            return bool(last_check[1])

        try:
            params = LocalTrainParams.model_validate(spec.get("hyperparameters") or {})
            result = train(
                params,
                base_model=spec["model"],
                train_path=_blob(settings, spec["training_file"]),
                validation_path=_blob(settings, spec.get("validation_file")),
                output_dir=run_dir / "output",
                cache_dir=settings.data_dir / "cache",
                on_event=on_event,
                should_stop=should_stop,
            )
            state.update(status=result.status, finished_at=time.time(), result=result.model_dump(mode="json"))
        except LocalTrainingError as exc:
            # Bad data, a missing base model, a changed recipe: retrying will not help; fail with the reason.
            state.update(
                status="failed", finished_at=time.time(), error={"code": type(exc).__name__, "message": str(exc)}
            )
        finally:
            stop_beat.set()
            events.close()
        write_json(run_dir / "status.json", state)
        return str(state["status"])
    finally:
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        lock_file.close()
