"""A `local` job end to end through the API, the in-process worker and a real training process: download of the
adapter and merged model, cancel while training, and resume after the training process is killed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[3]
TERMINAL = {"succeeded", "failed", "cancelled"}


def _upload(client: Any, headers: dict[str, str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = client.post("/v1/datasets", files={"file": ("train.jsonl", content)}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def _create(client: Any, headers: dict[str, str], dataset_id: str, model: Path, **hyperparameters: Any) -> str:
    body = {
        "training_dataset_id": dataset_id,
        "provider": "local",
        "model": str(model),
        "method": {"type": "supervised", "hyperparameters": {"max_seq_length": 64, **hyperparameters}},
    }
    r = client.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _wait_status(client: Any, headers: dict[str, str], job_id: str, statuses: set[str], timeout: float = 180) -> Any:
    return wait_for(
        lambda: (j := client.get(f"/v1/jobs/{job_id}", headers=headers).json())["status"] in statuses and j,
        timeout=timeout,
    )


def _run_events(settings: Any, job_id: str) -> list[dict[str, Any]]:
    path = settings.data_dir / "local_runs" / job_id / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _run_status(settings: Any, job_id: str) -> dict[str, Any]:
    return json.loads((settings.data_dir / "local_runs" / job_id / "status.json").read_text())


def _extract(body: bytes, into: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        names = archive.getnames()
        archive.extractall(into, filter="data")
    return names


def test_artifacts_list_and_download_a_loadable_adapter_and_merged_model(
    client, project, other_project, worker, tiny_model_dir, memorisable, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    h = project["headers"]
    ds = _upload(client, h, memorisable(12))
    job_id = _create(client, h, ds["id"], tiny_model_dir, n_epochs=2, eval_every_steps=0, merge_adapter=True)
    assert _wait_status(client, h, job_id, TERMINAL)["status"] == "succeeded"

    r = client.get(f"/v1/jobs/{job_id}/artifacts", headers=h)
    assert r.status_code == 200, r.text
    listed = {a["name"]: a for a in r.json()["data"]}
    assert {name: a["kind"] for name, a in listed.items()} == {"adapter": "adapter", "merged": "merged_model"}
    # A finished run keeps no resume points, so no checkpoint is listed; the checksums are stable across listings.
    assert client.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["data"] == r.json()["data"]

    bodies = {}
    for name, artifact in listed.items():
        d = client.get(artifact["download_url"], headers=h)
        assert d.status_code == 200, d.text
        assert d.headers["content-type"] == "application/x-tar"
        assert d.headers["content-disposition"].startswith(f'attachment; filename="{job_id}-{name}.tar"')
        assert d.headers["etag"] == f'"{artifact["sha256"]}"'
        assert len(d.content) == artifact["size_bytes"] == int(d.headers["content-length"])
        assert hashlib.sha256(d.content).hexdigest() == artifact["sha256"]
        bodies[name] = d.content

    adapter_names = _extract(bodies["adapter"], tmp_path / "dl")
    assert "adapter/adapter_model.safetensors" in adapter_names and "adapter/adapter_config.json" in adapter_names
    merged_names = _extract(bodies["merged"], tmp_path / "dl")
    assert "merged/config.json" in merged_names and any(n.endswith(".safetensors") for n in merged_names)

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        base_logits = base(tokens).logits.clone()
        adapted = PeftModel.from_pretrained(base, str(tmp_path / "dl" / "adapter"))
        adapted_logits = adapted(tokens).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(str(tmp_path / "dl" / "merged"))(tokens).logits
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-4)  # the download carries the trained weights
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4)
    assert AutoTokenizer.from_pretrained(str(tmp_path / "dl" / "merged")).chat_template  # a merged model is whole

    # Another project sees neither the job nor its files; an unknown name is a problem, not a crash.
    assert client.get(f"/v1/jobs/{job_id}/artifacts", headers=other_project["headers"]).status_code == 404
    other = client.get(f"/v1/jobs/{job_id}/artifacts/adapter", headers=other_project["headers"])
    assert other.status_code == 404 and other.json()["code"] == "job_not_found"
    missing = client.get(f"/v1/jobs/{job_id}/artifacts/nope", headers=h)
    assert missing.status_code == 404 and missing.json()["code"] == "artifact_not_found"
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_a_job_that_produced_nothing_lists_no_artifacts(client, project, settings, memorisable):
    from service.db import session_scope
    from service.jobs.models import Job

    ds = _upload(client, project["headers"], memorisable(4))
    with session_scope(settings) as session:
        job = Job(
            project_id=project["id"],
            provider="local",
            base_model="smollm2-135m-instruct",
            method={"type": "supervised", "hyperparameters": {}},
            training_dataset_id=ds["id"],
            status="created",
        )
        session.add(job)
        session.flush()
        job_id = job.id
    r = client.get(f"/v1/jobs/{job_id}/artifacts", headers=project["headers"])
    assert r.status_code == 200 and r.json() == {"object": "list", "data": [], "has_more": False, "next_cursor": None}
    assert client.get(f"/v1/jobs/{job_id}/artifacts/adapter", headers=project["headers"]).status_code == 404


def test_cancelling_a_running_local_job_stops_the_trainer(
    client, project, settings, worker, tiny_model_dir, memorisable
):
    h = project["headers"]
    ds = _upload(client, h, memorisable(12))
    # 100 epochs of 12 one-example steps: far more work than the cancel needs to arrive.
    job_id = _create(
        client, h, ds["id"], tiny_model_dir, n_epochs=100, batch_size=1, packing=False, checkpoint_every_steps=5
    )
    try:
        wait_for(lambda: any(e["type"] == "step" and e["step"] >= 6 for e in _run_events(settings, job_id)), 120)
        r = client.post(f"/v1/jobs/{job_id}/cancel", headers=h)
        assert r.status_code == 200, r.text
        job = _wait_status(client, h, job_id, TERMINAL, timeout=60)
    finally:
        (settings.data_dir / "local_runs" / job_id / "cancel").touch()  # never leave a trainer running past the test
    assert job["status"] == "cancelled", job
    result = _run_status(settings, job_id)["result"]
    assert result["status"] == "cancelled" and 6 <= result["steps"] < result["total_steps"] == 1200
    assert result["adapter_path"] is None
    assert any(
        e["type"] == "message" and e["message"].startswith("Cancelled at step") for e in _run_events(settings, job_id)
    )
    # What the cancelled run leaves is its resume point at the step it stopped at, downloadable like any artifact.
    artifacts = client.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["data"]
    assert artifacts and artifacts[0]["name"] == f"checkpoint-step-{result['steps']}"
    assert all(a["kind"] == "checkpoint" for a in artifacts)


# Run in a separate process as the first `local.train` delivery: train, and after the first checkpoint freeze (so the
# test kills the process at a known point rather than racing a fast machine), beating every 0.2 s until then.
_KILLABLE_TRAINER = """
import sys, time
from service.providers import local_runner
from service.providers.local import trainer

local_runner.HEARTBEAT_S = 0.2
saved = []
save, loss_sum = trainer.save_checkpoint, trainer.loss_sum

def save_and_note(*args, **kwargs):
    saved.append(save(*args, **kwargs))
    return saved[-1]

def freeze_after_a_checkpoint(*args, **kwargs):
    if saved:
        print("frozen", flush=True)
        time.sleep(600)
    return loss_sum(*args, **kwargs)

trainer.save_checkpoint, trainer.loss_sum = save_and_note, freeze_after_a_checkpoint
local_runner.run(sys.argv[1])
"""


def test_a_killed_training_process_resumes_from_its_checkpoint_and_succeeds(
    client, project, settings, worker, tiny_model_dir, memorisable, monkeypatch, tmp_path
):
    from service.providers import local_provider, local_runner

    enqueue = local_provider.LocalProvider._enqueue
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "trainer.log"

    def first_delivery_in_a_process(job_id: str) -> None:
        if started:
            enqueue(job_id)  # revivals go to the in-process worker's train queue as usual
            return
        with log.open("wb") as out:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-c", _KILLABLE_TRAINER, job_id], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
                )
            )

    monkeypatch.setattr(local_provider.LocalProvider, "_enqueue", staticmethod(first_delivery_in_a_process))
    # A beat every 0.2 s (here and in the process) keeps a live trainer fresh; 3 s without one and it counts as dead.
    monkeypatch.setattr(local_provider, "STALE_AFTER_S", 3.0)
    monkeypatch.setattr(local_runner, "HEARTBEAT_S", 0.2)

    h = project["headers"]
    ds = _upload(client, h, memorisable(12))
    # 12 examples, one per step, 2 epochs: 24 steps, a checkpoint every 4.
    job_id = _create(
        client, h, ds["id"], tiny_model_dir, n_epochs=2, batch_size=1, packing=False, checkpoint_every_steps=4
    )
    try:
        wait_for(lambda: "frozen" in log.read_text() if log.exists() else False, timeout=180)
        assert _wait_status(client, h, job_id, {"running"})  # the job saw the process train
        os.kill(started[0].pid, signal.SIGKILL)
        assert started[0].wait(30) == -signal.SIGKILL
        events_before = _run_events(settings, job_id)
        assert [e["step"] for e in events_before if e["type"] == "step"] == [1, 2, 3, 4]
        assert [e["step"] for e in events_before if e["type"] == "checkpoint"] == [4]

        job = _wait_status(client, h, job_id, TERMINAL, timeout=180)
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
    assert job["status"] == "succeeded", job
    assert (settings.data_dir / "local_runs" / job_id / "revived").exists()  # the stale heartbeat was noticed
    events = _run_events(settings, job_id)
    resumed_at = next(i for i, e in enumerate(events) if e["type"] == "message" and e["message"].startswith("Resumed"))
    assert events[resumed_at]["data"] == {"step": 4}
    later_steps = [e["step"] for e in events[resumed_at:] if e["type"] == "step"]
    assert later_steps == list(range(5, 25))  # from the checkpoint's step, not from 0
    result = _run_status(settings, job_id)["result"]
    assert result["resumed_from_step"] == 4 and result["steps"] == result["total_steps"] == 24
    # The job's metrics read like one run: every step once.
    points = client.get(f"/v1/jobs/{job_id}/metrics", headers=h).json()["points"]
    assert [p["step"] for p in points] == list(range(1, 25))
    assert [a["name"] for a in client.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["data"]] == ["adapter"]
