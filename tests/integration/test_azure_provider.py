"""The azure provider end to end on the emulator's Azure mode, through our REST API and the in-process worker: upload,
create, events, checkpoints, cancel, success, the deployment the fine-tune needs, and the fine-tuned model answering an
evaluation and /v1/chat/completions through it; faults injected; bad keys and bad input refused with the field named.

The worker killed at each submission step is in ``test_azure_crash_submission.py`` (separate processes, PostgreSQL and
Redis).
"""

from __future__ import annotations

import json

import pytest

from helpers import wait_for

KEY = "azure-key-0123456789abcdef"
BASE = "gpt-4.1-mini-2025-04-14"
LABELS = ("billing", "account", "shipping", "refund")
TRAIN = [(f"Ticket {i}: issue {7000 + i} needs routing", LABELS[(i * 7) % 4]) for i in range(20)]
TEST = [(f"Ticket {i}: issue {7000 + i} needs routing", LABELS[(i * 7) % 4]) for i in range(100, 140)]


def _jsonl(pairs: list[tuple[str, str]]) -> bytes:
    return "".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in pairs
    ).encode()


@pytest.fixture
def emulator():  # an Azure OpenAI resource instead of the integration conftest's OpenAI
    from emulator import EmulatorConfig, JobTiming, OpenAIEmulator

    config = EmulatorConfig.azure_resource(
        speed=200.0,
        api_keys=[KEY],
        job_timing=JobTiming(validating_seconds=10, queued_seconds=10, step_seconds=2),
        correct_answers=dict(TRAIN + TEST),
        fine_tuned_accuracy=0.95,
        base_accuracy=0.25,
    )
    with OpenAIEmulator(config) as emu:
        yield emu


@pytest.fixture
def azure(stack):
    """The stack with the project's Azure resource stored as its credentials (base_url = the resource endpoint)."""
    r = stack.client.put(
        "/v1/providers/azure/credentials",
        json={"api_key": KEY, "base_url": stack.emulator.endpoint},
        headers=stack.headers,
    )
    assert r.status_code == 200, r.text
    return stack


def _create(stack, ds_id: str, **extra) -> dict:
    body = {"training_dataset_id": ds_id, "provider": "azure", "model": BASE} | extra
    r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _wait(stack, path: str, statuses: set[str], timeout: float = 60.0) -> dict:
    return wait_for(lambda: (o := stack.get(path)) and o["status"] in statuses and o, timeout=timeout)


def _provider_jobs(stack, job_id: str) -> list[dict]:
    return [j for j in stack.emulator.state()["jobs"] if (j.get("metadata") or {}).get("finetune_job_id") == job_id]


def test_lifecycle_deployment_and_evaluation(azure):
    stack = azure
    train = stack.upload(_jsonl(TRAIN), "train.jsonl")
    test = stack.upload(_jsonl(TEST), "test.jsonl")
    hp = {"n_epochs": 4, "training_type": "globalstandard"}
    job = _create(stack, train["id"], suffix="tickets", seed=7, method={"type": "supervised", "hyperparameters": hp})
    assert job["estimated_cost_usd"] is not None and job["price_table_version"] == "2026-12-01"
    codes = [w["code"] for w in job["warnings"]]
    assert "azure_fine_tuning_closing" in codes and "openai_fine_tuning_closing" not in codes, codes

    done = _wait(stack, f"/v1/jobs/{job['id']}", {"succeeded", "failed", "cancelled"})
    assert done["status"] == "succeeded", done
    ft = done["fine_tuned_model"]
    assert ft.startswith(f"{BASE}.ft-") and done["trained_tokens"] > 0

    # One file (sent with the BOM Azure asks for) and one job, tagged with our id, carrying the recipe.
    files = [f for f in stack.emulator.core.store.files.values() if f.purpose == "fine-tune"]
    assert len(files) == 1 and stack.emulator.calls("POST /v1/files") == 1
    assert files[0].content.startswith(b"\xef\xbb\xbf") and files[0].content[3:] == _jsonl(TRAIN)
    (provider_job,) = _provider_jobs(stack, job["id"])
    assert provider_job["seed"] == 7 and stack.emulator.core.store.jobs[provider_job["id"]].suffix == "tickets"
    assert stack.emulator.calls("POST /v1/fine_tuning/jobs") == 1

    events = stack.get(f"/v1/jobs/{job['id']}/events", limit=100)["data"]
    assert any(e["source"] == "provider" and e["type"] == "metrics" for e in events)
    transitions = [e["data"]["to"] for e in reversed(events) if e["type"] == "status"]
    assert transitions[-1] == "succeeded"
    checkpoints = stack.get(f"/v1/jobs/{job['id']}/checkpoints")["data"]
    assert checkpoints and all(c["model"].startswith(f"{ft}:ckpt-step-") for c in checkpoints)

    # Azure serves the fine-tune only through a deployment: the job says so, with the command to make one.
    notice = next(w for w in done["warnings"] if w["code"] == "deployment_required")
    assert f"PUT /v1/jobs/{job['id']}/deployment" in notice["message"]
    info = stack.get(f"/v1/jobs/{job['id']}/deployment")
    assert info["deployment"] is None and f"--model-name {ft}" in info["command"]
    assert info["command"].startswith("az cognitiveservices account deployment create")
    assert info["chat_completions_url"] == f"{stack.emulator.endpoint}/openai/v1/chat/completions"

    # Not registered yet: the model cannot be called, and the answer says what to do.
    r = stack.client.post(
        "/v1/chat/completions",
        json={"model": ft, "messages": [{"role": "user", "content": TEST[0][0]}]},
        headers=stack.headers,
    )
    assert r.status_code == 409 and "deployment" in r.text, r.text

    stack.emulator.deploy("tickets-ft", ft)  # what the az command does on Azure's control plane
    stack.emulator.deploy(BASE, BASE)
    bad = stack.client.put(f"/v1/jobs/{job['id']}/deployment", json={"name": "no spaces"}, headers=stack.headers)
    assert bad.status_code == 422 and "name" in bad.text
    r = stack.client.put(f"/v1/jobs/{job['id']}/deployment", json={"name": "tickets-ft"}, headers=stack.headers)
    assert r.status_code == 200 and r.json()["deployment"] == "tickets-ft", r.text

    # OpenAI-shaped chat completions reach it by either name of the model: Azure's, and ours in /v1/models.
    listed = [m["id"] for m in stack.get("/v1/models")["data"] if m["id"].startswith(f"ft:{BASE}:")]
    assert len(listed) == 1, listed
    for name in (ft, listed[0]):
        r = stack.client.post(
            "/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": TEST[0][0]}]},
            headers=stack.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == TEST[0][1]

    body = {
        "dataset_id": test["id"],
        "candidates": [
            {"kind": "model", "name": "base", "provider": "azure", "model": BASE},
            {"kind": "job", "name": "fine-tuned", "job_id": job["id"]},
        ],
        "graders": [{"type": "exact_match", "name": "exact"}],
        "baseline": "base",
    }
    r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    ev = _wait(stack, f"/v1/evaluations/{r.json()['id']}", {"succeeded", "failed"})
    assert ev["status"] == "succeeded", ev
    by_name = {c["candidate"]: c for c in ev["results"]["candidates"]}
    assert by_name["fine-tuned"]["model"] == "tickets-ft"
    # Priced from Azure's table: the base deployment bears the model's name; "tickets-ft" is no name the table knows.
    assert by_name["base"]["cost_usd"] is not None and by_name["fine-tuned"]["cost_usd"] is None
    tuned = by_name["fine-tuned"]["graders"]["exact"]["metrics"]["pass_rate"]["estimate"]
    base = by_name["base"]["graders"]["exact"]["metrics"]["pass_rate"]["estimate"]
    assert tuned > base


def test_evaluation_without_deployment_fails_saying_what_to_do(azure):
    stack = azure
    train = stack.upload(_jsonl(TRAIN), "train.jsonl")
    test = stack.upload(_jsonl(TEST[:12]), "test.jsonl")
    job = _create(stack, train["id"], method={"type": "supervised", "hyperparameters": {"n_epochs": 1}})
    assert _wait(stack, f"/v1/jobs/{job['id']}", {"succeeded", "failed"})["status"] == "succeeded"
    body = {"dataset_id": test["id"], "candidates": [{"kind": "job", "name": "ft", "job_id": job["id"]}]}
    r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    ev = _wait(stack, f"/v1/evaluations/{r.json()['id']}", {"succeeded", "failed"})
    assert ev["status"] == "failed" and "deployment" in json.dumps(ev["error"]), ev
    assert stack.emulator.calls("POST /v1/chat/completions") == 0


def test_cancel_pause_resume(azure, chat_jsonl):
    stack = azure
    ds = stack.upload(chat_jsonl)
    job = _create(stack, ds["id"], method={"type": "supervised", "hyperparameters": {"n_epochs": 50}})
    _wait(stack, f"/v1/jobs/{job['id']}", {"running"})
    assert stack.client.post(f"/v1/jobs/{job['id']}/pause", headers=stack.headers).status_code == 200
    _wait(stack, f"/v1/jobs/{job['id']}", {"paused"})
    assert stack.client.post(f"/v1/jobs/{job['id']}/resume", headers=stack.headers).status_code == 200
    _wait(stack, f"/v1/jobs/{job['id']}", {"running"})
    assert stack.client.post(f"/v1/jobs/{job['id']}/cancel", headers=stack.headers).status_code == 200
    done = _wait(stack, f"/v1/jobs/{job['id']}", {"cancelled", "succeeded", "failed"})
    assert done["status"] == "cancelled", done
    assert not any(w["code"] == "deployment_required" for w in done["warnings"])
    r = stack.client.put(f"/v1/jobs/{job['id']}/deployment", json={"name": "x1"}, headers=stack.headers)
    assert r.status_code == 409 and r.json()["code"] == "job_not_succeeded"


def test_faults_make_one_file_and_one_job(azure, chat_jsonl):
    stack = azure
    emu = stack.emulator
    # The upload's answer is lost, the create's answer is lost after Azure made the job, reads see 500 and 429.
    emu.add_fault(r"^POST /v1/files$", "act_then_drop")
    emu.add_fault(r"^POST /v1/fine_tuning/jobs$", "act_then_500")
    emu.add_fault(r"^GET /v1/fine_tuning/jobs/[^/]+$", "429", count=2)
    emu.add_fault(r"^GET /v1/fine_tuning/jobs/[^/]+/events$", "500", count=2)
    ds = stack.upload(chat_jsonl)
    job = _create(stack, ds["id"], method={"type": "supervised", "hyperparameters": {"n_epochs": 2}})
    done = _wait(stack, f"/v1/jobs/{job['id']}", {"succeeded", "failed", "cancelled"}, timeout=90)
    assert done["status"] == "succeeded", done
    assert len(_provider_jobs(stack, job["id"])) == 1 and emu.calls("POST /v1/fine_tuning/jobs") == 1
    assert len([f for f in emu.state()["files"] if f["purpose"] == "fine-tune"]) == 1


def test_provider_failure_and_bad_key(azure, chat_jsonl):
    stack = azure
    ds = stack.upload(chat_jsonl)
    failing = _create(stack, ds["id"], metadata={"emulator_outcome": "fail"})
    done = _wait(stack, f"/v1/jobs/{failing['id']}", {"succeeded", "failed", "cancelled"})
    assert done["status"] == "failed" and done["error"]["message"]

    r = stack.client.put(
        "/v1/providers/azure/credentials",
        json={"api_key": "wrong-key-0123456789", "base_url": stack.emulator.endpoint},
        headers=stack.headers,
    )
    assert r.status_code == 200
    refused = _create(stack, ds["id"])
    done = _wait(stack, f"/v1/jobs/{refused['id']}", {"succeeded", "failed", "cancelled"})
    assert done["status"] == "failed" and "Access denied" in done["error"]["message"], done


def test_bad_input_is_refused_naming_the_field(azure, chat_jsonl, monkeypatch):
    from service.providers.azure import files

    stack = azure
    ds = stack.upload(chat_jsonl)
    cases = [
        (
            {"method": {"type": "supervised", "hyperparameters": {"lora_rank": 8}}},
            "invalid_hyperparameters",
            "lora_rank",
        ),
        (
            {"method": {"type": "supervised", "hyperparameters": {"training_type": "spot"}}},
            "invalid_hyperparameters",
            "training_type",
        ),
        # Azure fine-tunes gpt-4o-mini with supervised training only.
        ({"model": "gpt-4o-mini", "method": {"type": "dpo"}}, "model_not_fine_tunable", "dpo"),
    ]
    for extra, code, named in cases:
        body = {"training_dataset_id": ds["id"], "provider": "azure", "model": BASE} | extra
        r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
        assert r.status_code == 422 and r.json()["code"] == code and named in r.text, r.text
    # Azure's 512 MB limit (made small here) is checked before anything is uploaded.
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    r = stack.client.post(
        "/v1/jobs", json={"training_dataset_id": ds["id"], "provider": "azure", "model": BASE}, headers=stack.headers
    )
    assert r.status_code == 422 and r.json()["code"] == "file_too_large" and "training_dataset_id" in r.text, r.text
    assert stack.emulator.calls("POST /v1/fine_tuning/jobs") == 0 and stack.emulator.calls("POST /v1/files") == 0


def test_missing_credentials_are_named(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    job = _create(stack, ds["id"])

    # Like the openai provider: retried with back-off (credentials may be stored any moment), the reason on the job.
    def told() -> dict | None:
        o = stack.get(f"/v1/jobs/{job['id']}")
        return o if "PUT /v1/providers/azure/credentials" in json.dumps(o) else None

    seen = wait_for(told)
    assert seen["status"] in ("created", "uploading") and seen["last_error"], seen
