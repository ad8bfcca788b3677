"""A job goes from upload to succeeded on the OpenAI emulator, through the API and the in-process worker."""

from __future__ import annotations

from helpers import wait_for


def _create_job(stack, ds_id: str, **extra):
    body = {"training_dataset_id": ds_id, "provider": "openai", "model": "gpt-4.1-mini-2025-04-14"} | extra
    r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _wait_status(stack, job_id: str, statuses: set[str], timeout: float = 30.0):
    def check():
        job = stack.get(f"/v1/jobs/{job_id}")
        return job if job["status"] in statuses else None

    return wait_for(check, timeout=timeout)


def test_job_runs_to_succeeded(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    assert ds["status"] == "ready", ds
    # Enough steps (≈1.8 s of emulated training) that the worker sees the job running even on a loaded machine; with
    # the automatic 3 epochs it could go from queued to succeeded between two polls.
    job = _create_job(
        stack,
        ds["id"],
        suffix="tickets",
        metadata={"team": "support"},
        method={"type": "supervised", "hyperparameters": {"n_epochs": 15}},
    )
    assert job["status"] == "created"
    assert job["estimated_cost_usd"] is not None and job["price_table_version"]
    assert any(w["code"] == "openai_fine_tuning_closing" for w in job["warnings"])

    done = _wait_status(stack, job["id"], {"succeeded", "failed", "cancelled"})
    assert done["status"] == "succeeded", done
    assert done["fine_tuned_model"].startswith("ft:gpt-4.1-mini-2025-04-14:")
    assert done["trained_tokens"] > 0 and done["actual_cost_usd"] is not None
    assert done["provider_job_id"].startswith("ftjob-")

    # Exactly one provider job and one file upload, tagged with our id.
    jobs = stack.emulator.state()["jobs"]
    assert len(jobs) == 1
    assert jobs[0]["metadata"]["finetune_job_id"] == job["id"]

    events, cursor = [], None
    while True:
        page = stack.get(f"/v1/jobs/{job['id']}/events", limit=100, **({"after": cursor} if cursor else {}))
        events += page["data"]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    transitions = [e["data"]["to"] for e in reversed(events) if e["type"] == "status"]
    assert transitions[0] == "created" and transitions[-1] == "succeeded"
    assert "running" in transitions
    assert any(e["source"] == "provider" and e["type"] == "metrics" for e in events)
    assert stack.get(f"/v1/jobs/{job['id']}/checkpoints")["data"], "checkpoints are recorded"
    points = stack.get(f"/v1/jobs/{job['id']}/metrics")["points"]
    assert points and "train_loss" in points[0]

    types = [e["type"] for e in stack.get("/v1/events", limit=100)["data"]]
    assert "job.succeeded" in types and "job.running" in types and "dataset.ready" in types


def test_same_dataset_is_uploaded_once(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    a = _create_job(stack, ds["id"])
    b = _create_job(stack, ds["id"])
    for j in (a, b):
        assert _wait_status(stack, j["id"], {"succeeded"})["status"] == "succeeded"
    files = stack.emulator.state()["files"]
    training_files = [f for f in files if f["purpose"] == "fine-tune"]
    assert len(training_files) == 1, stack.emulator.calls()


def test_cancel_while_running(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    job = _create_job(stack, ds["id"], method={"type": "supervised", "hyperparameters": {"n_epochs": 50}})
    _wait_status(stack, job["id"], {"running"})
    r = stack.client.post(f"/v1/jobs/{job['id']}/cancel", headers=stack.headers)
    assert r.status_code == 200, r.text
    done = _wait_status(stack, job["id"], {"cancelled", "succeeded", "failed"})
    assert done["status"] == "cancelled"
    assert stack.client.post(f"/v1/jobs/{job['id']}/cancel", headers=stack.headers).status_code == 409


def test_provider_failure_is_reported(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    job = _create_job(stack, ds["id"], metadata={"emulator_outcome": "fail"})
    done = _wait_status(stack, job["id"], {"succeeded", "failed", "cancelled"})
    assert done["status"] == "failed"
    assert done["error"]["message"]


def test_job_on_unready_dataset_is_refused(stack):
    bad = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    ds = stack.upload(bad)
    assert ds["status"] == "invalid"
    r = stack.client.post(
        "/v1/jobs",
        json={"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-4.1-mini"},
        headers=stack.headers,
    )
    assert r.status_code == 409 and r.json()["code"] == "dataset_not_ready"


def test_model_that_cannot_be_fine_tuned_is_refused(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    r = stack.client.post(
        "/v1/jobs",
        json={"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-5"},
        headers=stack.headers,
    )
    assert r.status_code == 422 and r.json()["code"] == "model_not_fine_tunable", r.text


def test_max_cost_refuses_expensive_jobs(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    r = stack.client.post(
        "/v1/jobs",
        json={
            "training_dataset_id": ds["id"],
            "provider": "openai",
            "model": "gpt-4.1-mini",
            "max_cost_usd": "0.000001",
        },
        headers=stack.headers,
    )
    assert r.status_code == 422 and r.json()["code"] == "cost_limit_exceeded", r.text


def test_rerun_moves_the_recipe_and_links_jobs(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    first = _create_job(stack, ds["id"], seed=42, method={"type": "supervised", "hyperparameters": {"n_epochs": 2}})
    r = stack.client.post(
        f"/v1/jobs/{first['id']}/rerun", json={"model": "gpt-4o-mini-2024-07-18"}, headers=stack.headers
    )
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["rerun_of_job_id"] == first["id"]
    assert second["model"] == "gpt-4o-mini-2024-07-18" and second["seed"] == 42
    assert second["method"]["hyperparameters"]["n_epochs"] == 2
    assert second["training_dataset_id"] == ds["id"]
    assert _wait_status(stack, second["id"], {"succeeded"})["status"] == "succeeded"


def test_pause_and_resume(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    job = _create_job(stack, ds["id"], method={"type": "supervised", "hyperparameters": {"n_epochs": 50}})
    _wait_status(stack, job["id"], {"running"})
    assert stack.client.post(f"/v1/jobs/{job['id']}/resume", headers=stack.headers).status_code == 409
    assert stack.client.post(f"/v1/jobs/{job['id']}/pause", headers=stack.headers).status_code == 200
    _wait_status(stack, job["id"], {"paused"})
    assert stack.client.post(f"/v1/jobs/{job['id']}/resume", headers=stack.headers).status_code == 200
    _wait_status(stack, job["id"], {"running", "succeeded"})
    stack.client.post(f"/v1/jobs/{job['id']}/cancel", headers=stack.headers)
    assert _wait_status(stack, job["id"], {"cancelled", "succeeded"})["status"] in {"cancelled", "succeeded"}


def test_watch_follows_a_job_to_the_end(stack, chat_jsonl):
    import io

    from rich.console import Console

    from service.watch import watch

    ds = stack.upload(chat_jsonl)
    job = _create_job(stack, ds["id"])
    out = io.StringIO()
    key = stack.headers["Authorization"].split()[1]
    # The test client's transport serves the in-process app.
    final = watch(
        "http://testserver",
        key,
        job["id"],
        interval=0.1,
        console=Console(file=out, width=120),
        client=stack.client,
    )
    assert final["status"] == "succeeded"
    assert "succeeded" in out.getvalue() and "step" in out.getvalue()


def test_job_with_a_validation_dataset(stack, chat_jsonl):
    train = stack.upload(chat_jsonl)
    val = stack.upload(chat_jsonl.replace(b"Ticket", b"Case"))
    job = _create_job(stack, train["id"], validation_dataset_id=val["id"])
    assert _wait_status(stack, job["id"], {"succeeded", "failed"})["status"] == "succeeded"
    files = [f for f in stack.emulator.state()["files"] if f["purpose"] == "fine-tune"]
    assert len(files) == 2
