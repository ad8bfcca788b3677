"""A `local` job through the API: the job runner hands training to the train queue and follows the run folder."""

from __future__ import annotations

import json

import pytest

from helpers import wait_for

pytest.importorskip("torch")
pytest.importorskip("peft")


def _upload(client, headers, rows):
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = client.post("/v1/datasets", files={"file": ("train.jsonl", content)}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def _wait(client, headers, job_id, statuses, timeout=120):
    return wait_for(
        lambda: (j := client.get(f"/v1/jobs/{job_id}", headers=headers).json())["status"] in statuses and j,
        timeout=timeout,
    )


def test_local_job_trains_to_succeeded(client, project, worker, tiny_model_dir, memorisable):
    h = project["headers"]
    ds = _upload(client, h, memorisable(12))
    assert ds["status"] == "ready", ds
    body = {
        "training_dataset_id": ds["id"],
        "provider": "local",
        "model": str(tiny_model_dir),
        "method": {
            "type": "supervised",
            "hyperparameters": {"n_epochs": 2, "max_seq_length": 64, "eval_every_steps": 0},
        },
    }
    r = client.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.text
    job = _wait(client, h, r.json()["id"], {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded", job
    # OpenAI's naming (ft:{base}:{project}:{suffix}:{id}), so code written for OpenAI keeps working.
    assert job["fine_tuned_model"].startswith("ft:") and job["fine_tuned_model"].endswith(f":test-project::{job['id']}")
    assert job["trained_tokens"] > 0
    points = client.get(f"/v1/jobs/{job['id']}/metrics", headers=h).json()["points"]
    assert points and points[-1]["train_loss"] < points[0]["train_loss"]
    cps = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=h).json()["data"]
    assert any(c["model"] == job["fine_tuned_model"] for c in cps)


def test_local_job_refuses_unknown_hyperparameters(client, project, memorisable):
    ds = _upload(client, project["headers"], memorisable(12))
    body = {
        "training_dataset_id": ds["id"],
        "provider": "local",
        "model": "smollm2-135m-instruct",
        "method": {"type": "supervised", "hyperparameters": {"learning_rate_multiplier": 2}},
    }
    r = client.post("/v1/jobs", json=body, headers=project["headers"])
    assert r.status_code == 422 and r.json()["code"] == "invalid_hyperparameters"


def test_cancel_a_queued_local_job(settings, tiny_model_dir, monkeypatch):
    from service.providers.base import JobSpec
    from service.providers.local_provider import LocalProvider
    from service.providers.local_runner import run

    sent = []
    monkeypatch.setattr(LocalProvider, "_enqueue", staticmethod(sent.append))  # no worker here: the run stays queued
    provider = LocalProvider(settings)
    spec = JobSpec(
        our_job_id="job_x", model=str(tiny_model_dir), method="supervised", training_file="sha256:" + "0" * 64
    )
    assert provider.create_job(spec).status.value == "queued" and sent == ["job_x"]
    assert provider.find_job("job_x") is not None and provider.find_job("job_y") is None
    assert provider.cancel("job_x").raw_status == "cancelled"
    assert run("job_x", settings) == "cancelled"  # a late task does not train a cancelled run


def test_unknown_base_model_is_refused_before_the_job_exists(client, project, memorisable, tmp_path):
    ds = _upload(client, project["headers"], memorisable(12))
    body = {"training_dataset_id": ds["id"], "model": str(tmp_path / "missing.gguf")}  # provider: the default, local
    r = client.post("/v1/jobs", json=body, headers=project["headers"])
    assert r.status_code == 422 and r.json()["code"] == "base_model_unavailable", r.text
    assert "not found" in r.json()["detail"]
