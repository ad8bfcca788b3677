"""The ``local.train`` task body: run one local job's training in this worker, writing its run folder.

Safe to deliver twice: a file lock lets one trainer work on a run at a time, a finished run is not trained again, and
an interrupted one resumes from its last checkpoint (the trainer does both).

One training per device: a second file lock per device (``data/locks/train-<device>.lock``) is held while training,
so trainers in other threads or processes sharing the data directory wait for it, whatever the worker layout. A
waiting run stays ``queued``, keeps a heartbeat (so it is not sent again) and can be cancelled while it waits.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from service.datasets.storage import blob_path
from service.providers.local_provider import HEARTBEAT_S, read_json, runs_dir, write_json
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)
CANCEL_POLL_S = 1.0
DEVICE_POLL_S = 1.0
TERMINAL = ("succeeded", "failed", "cancelled")


def _blob(settings: Settings, file_id: str | None) -> Any:
    if not file_id:
        return None
    return blob_path(settings, file_id.removeprefix("sha256:"))


def run(job_id: str, settings: Settings | None = None) -> str:
    """Train the run; returns its final status (or ``busy`` when another trainer holds it)."""
    from service.providers.local import LocalTrainingError

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
        if current in TERMINAL:
            return str(current)
        try:
            device, device_key = training_device()
        except LocalTrainingError as exc:  # no torch on this worker: say so on the job rather than retry forever
            failed = {"status": "failed", "finished_at": time.time(), "error": _error(exc)}
            write_json(run_dir / "status.json", failed)
            return "failed"
        device_lock = acquire_device(settings, device_key, while_waiting=_waiting(run_dir, device_key))
        if device_lock is None:  # cancelled while it waited for the device
            final = (read_json(run_dir / "status.json") or {}).get("status")
            if final not in TERMINAL:
                final = "cancelled"
                write_json(run_dir / "status.json", {"status": final, "finished_at": time.time()})
            return str(final)
        try:
            return _train(job_id, settings, run_dir, spec, device)
        finally:
            fcntl.flock(device_lock, fcntl.LOCK_UN)
            device_lock.close()
    finally:
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        lock_file.close()


def _error(exc: Exception) -> dict[str, str]:
    return {"code": type(exc).__name__, "message": str(exc)}


def training_device() -> tuple[str, str]:
    """(the device to train on, a name for it that is the same in every process on this host)."""
    from service.providers.local.availability import require_available

    require_available()
    import torch

    from service.providers.local.runtime import select_device

    device = select_device("auto")
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        # CUDA_VISIBLE_DEVICES renumbers GPUs per process; the UUID names the physical one.
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        return f"cuda:{index}", f"cuda-{uuid}" if uuid else f"cuda-{index}"
    return str(device), re.sub(r"[^A-Za-z0-9_.-]", "-", str(device))


def acquire_device(settings: Settings, device_key: str, *, while_waiting: Callable[[], bool]) -> IO[str] | None:
    """Hold the device's lock file (released by the kernel if this process dies). While another trainer holds it,
    call ``while_waiting`` about once a second; when it returns False, give up and return None."""
    path = settings.data_dir / "locks" / f"train-{device_key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("w")
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if not while_waiting():
                handle.close()
                return None
            time.sleep(DEVICE_POLL_S)


def _waiting(run_dir: Path, device_key: str) -> Callable[[], bool]:
    last_beat = [0.0]

    def still_wanted() -> bool:
        if (run_dir / "cancel").exists():
            return False
        if (read_json(run_dir / "status.json") or {}).get("status") in TERMINAL:
            return False
        if time.time() - last_beat[0] >= HEARTBEAT_S:
            last_beat[0] = time.time()
            state = {"status": "queued", "heartbeat": last_beat[0], "waiting_for_device": device_key}
            write_json(run_dir / "status.json", state)
        return True

    return still_wanted


def _base_model(settings: Settings, job_id: str, name: str) -> Any:
    """The run's base model as its job's project may use it, checked again here (and not only when the job was
    created): the operator's model directories may have changed since, and runs queued before such checks existed
    must not read another project's files either."""
    from service.db import session_scope
    from service.jobs.local_models import resolve_local_model
    from service.jobs.models import Job

    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        project_id = job.project_id if job is not None else None
        return resolve_local_model(session, settings, project_id, name, purpose="train").base


def _train(job_id: str, settings: Settings, run_dir: Path, spec: dict[str, Any], device: str) -> str:
    from service.providers.local import LocalTrainingError, LocalTrainParams, train
    from service.providers.local_provider import run_artifacts

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
        method = str(spec.get("method") or "supervised")  # runs queued before methods were recorded are SFT
        params = LocalTrainParams.model_validate(spec.get("hyperparameters") or {}, context={"method": method})
        result = train(
            params,
            method=method,
            base_model=_base_model(settings, job_id, spec["model"]),
            train_path=_blob(settings, spec["training_file"]),
            validation_path=_blob(settings, spec.get("validation_file")),
            output_dir=run_dir / "output",
            cache_dir=settings.data_dir / "cache",
            device=device,
            on_event=on_event,
            should_stop=should_stop,
        )
        state.update(status=result.status, finished_at=time.time(), result=result.model_dump(mode="json"))
    except LocalTrainingError as exc:
        # Bad data, a missing base model, a changed recipe: retrying will not help; fail with the reason.
        state.update(status="failed", finished_at=time.time(), error=_error(exc))
    finally:
        stop_beat.set()
        events.close()
    if state["status"] == "succeeded":
        # Checksum the outputs now, while the worker holds the device anyway, so the first listing is quick.
        try:
            run_artifacts(settings, job_id)
        except OSError:
            log.warning("could not checksum the artifacts of %s", job_id, exc_info=True)
    write_json(run_dir / "status.json", state)
    return str(state["status"])
