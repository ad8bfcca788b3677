"""One training per device: the device lock across processes (wait, cancel while waiting, then train), the
embedded workers' separate single-thread train consumer, and no pile of revivals for a dead or waiting run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

pytest.importorskip("torch")
pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[3]

# Another worker process on this host, training on the same device: it holds the device until its stdin closes.
_HOLDER = """
import sys
from service.providers.local_runner import acquire_device, training_device
from service.settings import get_settings

lock = acquire_device(get_settings(), training_device()[1], while_waiting=lambda: False)
print("held" if lock else "busy", flush=True)
sys.stdin.read()
"""


def _make_run(settings: Any, job_id: str, model: Path, rows: list[dict[str, Any]], sent: list[str]) -> Any:
    from service.datasets.storage import blob_path
    from service.providers.base import JobSpec
    from service.providers.local_provider import LocalProvider

    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    sha = hashlib.sha256(content).hexdigest()
    blob = blob_path(settings, sha)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    provider = LocalProvider(settings)
    hyperparameters = {"n_epochs": 1, "max_seq_length": 64, "eval_every_steps": 0}
    provider.create_job(
        JobSpec(
            our_job_id=job_id,
            model=str(model),
            method="supervised",
            hyperparameters=hyperparameters,
            training_file=f"sha256:{sha}",
        )
    )
    assert sent[-1] == job_id
    return provider


def _status(settings: Any, job_id: str) -> dict[str, Any]:
    path = settings.data_dir / "local_runs" / job_id / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _in_thread(job_id: str, settings: Any) -> tuple[threading.Thread, list[str]]:
    from service.providers.local_runner import run

    out: list[str] = []
    thread = threading.Thread(target=lambda: out.append(run(job_id, settings)), daemon=True)
    thread.start()
    return thread, out


def test_a_trainer_waits_while_another_process_trains_on_the_device(settings, tiny_model_dir, memorisable, monkeypatch):
    from service.providers import local_provider
    from service.providers.local_runner import acquire_device, training_device

    sent: list[str] = []
    monkeypatch.setattr(local_provider.LocalProvider, "_enqueue", staticmethod(sent.append))
    monkeypatch.setattr(local_provider, "REQUEUE_QUEUED_AFTER_S", 0.0)  # a lost message would be re-sent at once
    provider = _make_run(settings, "job_a", tiny_model_dir, memorisable(6), sent)
    _make_run(settings, "job_b", tiny_model_dir, memorisable(6), sent)
    device_key = training_device()[1]

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert acquire_device(settings, device_key, while_waiting=lambda: False) is None  # exclusive across processes

        # A run that waits for the device stays queued with a fresh heartbeat: it is not sent again, and a cancel
        # ends it without training.
        thread_a, out_a = _in_thread("job_a", settings)
        wait_for(lambda: _status(settings, "job_a").get("waiting_for_device") == device_key, timeout=60)
        before = len(sent)
        assert provider.get_job("job_a").raw_status == "queued" and len(sent) == before
        assert provider.cancel("job_a").raw_status == "cancelled"
        thread_a.join(30)
        assert out_a == ["cancelled"] and _status(settings, "job_a")["status"] == "cancelled"
        assert not (settings.data_dir / "local_runs" / "job_a" / "output").exists()

        # The next run waits too, and trains as soon as the other process lets the device go.
        thread_b, out_b = _in_thread("job_b", settings)
        wait_for(lambda: _status(settings, "job_b").get("waiting_for_device") == device_key, timeout=60)
        time.sleep(1.5)  # more than a poll of the device lock: it must still be waiting, not training
        assert _status(settings, "job_b")["status"] == "queued" and thread_b.is_alive()
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(30)
    thread_b.join(120)
    assert out_b == ["succeeded"], _status(settings, "job_b")
    assert _status(settings, "job_b")["result"]["steps"] > 0


def test_a_dead_trainer_is_sent_again_once_not_at_every_poll(settings, tiny_model_dir, memorisable, monkeypatch):
    from service.providers import local_provider

    sent: list[str] = []
    monkeypatch.setattr(local_provider.LocalProvider, "_enqueue", staticmethod(sent.append))
    provider = _make_run(settings, "job_d", tiny_model_dir, memorisable(4), sent)
    status_file = settings.data_dir / "local_runs" / "job_d" / "status.json"
    stale = time.time() - local_provider.STALE_AFTER_S - 5
    status_file.write_text(json.dumps({"status": "running", "heartbeat": stale}))

    assert provider.get_job("job_d").raw_status == "running"
    assert sent == ["job_d", "job_d"]  # created, then revived
    for _ in range(3):
        provider.get_job("job_d")  # polls while the revival waits in the train queue
    assert sent == ["job_d", "job_d"]

    monkeypatch.setattr(local_provider, "STALE_AFTER_S", 0.0)  # the revival itself went stale: send it again
    time.sleep(0.01)
    provider.get_job("job_d")
    assert sent == ["job_d", "job_d", "job_d"]


def test_embedded_workers_give_training_its_own_single_thread():
    from worker.embedded import embedded_workers

    main, train = embedded_workers(4)
    queues = {name: sorted(w.controller.app.amqp.queues.consume_from) for name, w in (("main", main), ("train", train))}
    assert queues == {"main": ["default", "webhooks"], "train": ["train"]}
    assert (main.controller.concurrency, train.controller.concurrency) == (4, 1)
    assert main.controller.app is not train.controller.app
    assert "local.train" in train.controller.app.tasks and "jobs.advance" in main.controller.app.tasks
    from celery import current_app

    assert current_app._get_current_object() is main.controller.app  # the process's app stays the main one
