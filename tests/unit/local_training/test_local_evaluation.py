"""A local job that asks for an evaluation: on success the service runs base and fine-tuned (the job's LoRA
adapter) by local inference on the held-out set, and grades them."""

from __future__ import annotations

import json

import pytest

from helpers import wait_for

pytest.importorskip("torch")
pytest.importorskip("peft")


def _upload(client, headers, rows, name):
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = client.post("/v1/datasets", files={"file": (name, content)}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_local_job_evaluation_runs_base_and_adapter(client, project, worker, tiny_model_dir, memorisable):
    h = project["headers"]
    train = _upload(client, h, memorisable(12), "train.jsonl")
    test = _upload(client, h, memorisable(12)[::-1], "test.jsonl")
    body = {
        "training_dataset_id": train["id"],
        "provider": "local",
        "model": str(tiny_model_dir),
        "method": {
            "type": "supervised",
            "hyperparameters": {"n_epochs": 3, "learning_rate": 0.005, "max_seq_length": 64, "eval_every_steps": 0},
        },
        "evaluation": {
            "dataset_id": test["id"],
            "graders": [{"type": "exact_match", "name": "exact"}, {"type": "chrf", "name": "chrf"}],
            "sampling": {"max_tokens": 4},
        },
    }
    r = client.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.text
    # The evaluation is started by a subscriber to job.succeeded, just after the job's own transition.
    job = wait_for(
        lambda: (
            (j := client.get(f"/v1/jobs/{r.json()['id']}", headers=h).json())["status"]
            in ("failed", "cancelled")
            or (j["status"] == "succeeded" and j["evaluation_id"])
        )
        and j,
        timeout=180,
    )
    assert job["status"] == "succeeded", job
    ev = wait_for(
        lambda: (
            (e := client.get(f"/v1/evaluations/{job['evaluation_id']}", headers=h).json())["status"]
            in ("succeeded", "failed", "cancelled")
            and e
        ),
        timeout=180,
    )
    assert ev["status"] == "succeeded", ev
    results = {c["candidate"]: c for c in ev["results"]["candidates"]}
    assert set(results) == {"base", "fine-tuned"}
    assert results["fine-tuned"]["model"] == f"local:{job['id']}"
    assert results["base"]["n"] == results["fine-tuned"]["n"] == 12
    assert results["fine-tuned"]["cost_usd"] == "0" and results["fine-tuned"]["output_tokens"] > 0
    assert results["fine-tuned"]["graders"]["chrf"]["n_graded"] == 12

    def outputs(candidate):
        page = client.get(
            f"/v1/evaluations/{ev['id']}/samples", params={"candidate": candidate, "limit": 100}, headers=h
        ).json()
        return {s["example_index"]: s["output"] for s in page["data"]}

    base, tuned = outputs("base"), outputs("fine-tuned")
    assert len(base) == len(tuned) == 12
    # The adapter was applied: trained weights answer differently from the random base on some prompts.
    assert any(base[i] != tuned[i] for i in base)
