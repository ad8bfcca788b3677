"""Training on Together through our REST API, against the Together emulator (a real HTTP server): the project's key
stored with PUT /v1/providers/together/credentials; upload, create, events, checkpoints, success, the fine-tuned
model answering an evaluation and our /v1/chat/completions; cancel; a job Together fails; faults injected at each
creating call, after which there is still exactly one Together file and one Together job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from helpers import wait_for

BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
LABELS = ("billing", "account", "shipping", "refund")
PAIRS = [(f"Ticket {i}: issue number {7000 + i} needs routing", LABELS[(i * 7) % 4]) for i in range(16)]
TERMINAL = {"succeeded", "failed", "cancelled"}


def _jsonl(pairs: list[tuple[str, str]]) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Route the ticket. Answer with one label."},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ]
        }
        for text, label in pairs
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@dataclass
class TogetherStack:
    client: Any
    headers: dict[str, str]
    emulator: Any

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = self.client.get(path, headers=self.headers, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def upload(self, content: bytes, name: str = "train.jsonl") -> dict[str, Any]:
        r = self.client.post("/v1/datasets", files={"file": (name, content)}, headers=self.headers)
        assert r.status_code in (200, 201), r.text
        assert r.json()["status"] == "ready", r.json()
        return r.json()

    def create_job(self, ds_id: str, **extra: Any) -> dict[str, Any]:
        body = {"training_dataset_id": ds_id, "provider": "together", "model": BASE} | extra
        r = self.client.post("/v1/jobs", json=body, headers=self.headers)
        assert r.status_code == 201, r.text
        return r.json()

    def wait(self, job_id: str, statuses: set[str] = TERMINAL, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(lambda: (j := self.get(f"/v1/jobs/{job_id}")) and j["status"] in statuses and j, timeout)

    def provider_jobs(self) -> list[dict[str, Any]]:
        return self.emulator.dump()["jobs"]

    def provider_files(self) -> list[dict[str, Any]]:
        return self.emulator.dump()["files"]


@pytest.fixture
def together() -> Iterator[Any]:
    from together_emulator import JobTiming, TogetherEmulator

    with TogetherEmulator(speed=200.0, timing=JobTiming()) as emu:
        yield emu


@pytest.fixture
def tstack(settings, together, worker, project) -> Iterator[TogetherStack]:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.put(
            "/v1/providers/together/credentials",
            json={"api_key": together.api_key, "base_url": together.base_url},
            headers=project["headers"],
        )
        assert r.status_code == 200, r.text
        yield TogetherStack(client=client, headers=project["headers"], emulator=together)


def test_lifecycle_to_an_evaluated_fine_tune(tstack):
    train = tstack.upload(_jsonl(PAIRS))
    test = tstack.upload(_jsonl(PAIRS), "test.jsonl")
    job = tstack.create_job(
        train["id"],
        suffix="tickets",
        method={
            "type": "supervised",
            # 16 rows x 10 epochs at batch size 1: 160 steps, 1.6 s of real time, so polls see it running.
            "hyperparameters": {"n_epochs": 10, "batch_size": 1, "n_checkpoints": 3, "lora_r": 16, "lora_alpha": 32},
        },
        evaluation={"dataset_id": test["id"], "graders": [{"type": "exact_match", "name": "exact"}]},
    )
    # Priced at creation from Together's dated list prices: 10 epochs of LoRA SFT on a model up to 16B.
    assert job["price_table_version"] == "2026-11-01" and float(job["estimated_cost_usd"]) > 0
    assert "cost_estimate_approximate" in [w["code"] for w in job["warnings"]]
    done = wait_for(
        lambda: (
            (j := tstack.get(f"/v1/jobs/{job['id']}"))
            and (j["status"] in ("failed", "cancelled") or (j["status"] == "succeeded" and j["evaluation_id"]))
            and j
        ),
        timeout=60,
    )
    assert done["status"] == "succeeded", done
    assert done["provider_job_id"].startswith("ft-")
    assert done["fine_tuned_model"].startswith(f"emulated-account/{BASE.split('/')[1]}-tickets-")
    assert done["trained_tokens"] > 0 and float(done["actual_cost_usd"]) > 0  # at Together's LoRA SFT list price

    # One Together file and one job, which carries our id in its suffix and the settings we asked for.
    (pj,) = tstack.provider_jobs()
    assert job["id"].split("_", 1)[1].lower() in pj["suffix"]
    assert pj["training_type"] == {"type": "Lora", "lora_r": 16, "lora_alpha": 32}
    assert pj["n_epochs"] == 10 and pj["training_method"] == {"method": "sft", "train_on_inputs": False}
    assert len(tstack.provider_files()) == 1  # the training set; the test set is asked through chat completions
    events = tstack.get(f"/v1/jobs/{job['id']}/events", limit=100)["data"]
    provider_types = {e["type"] for e in events if e["source"] == "provider"}
    assert {"job_pending", "training_start", "checkpoint_save", "job_complete"} <= provider_types
    transitions = [e["data"]["to"] for e in reversed(events) if e["type"] == "status"]
    assert transitions[0] == "created" and transitions[-1] == "succeeded" and "running" in transitions
    steps = [c["step"] for c in tstack.get(f"/v1/jobs/{job['id']}/checkpoints")["data"]]
    assert len(steps) >= 3 and len(set(steps)) == len(steps)

    ev = wait_for(
        lambda: (e := tstack.get(f"/v1/evaluations/{done['evaluation_id']}")) and e["status"] in TERMINAL and e,
        timeout=60,
    )
    assert ev["status"] == "succeeded", ev
    by_name = {c["candidate"]: c for c in ev["results"]["candidates"]}
    tuned, base = by_name["fine-tuned"], by_name["base"]
    assert tuned["model"] == done["fine_tuned_model"] and base["model"] == BASE
    assert tuned["graders"]["exact"]["metrics"]["pass_rate"]["estimate"] == 1.0
    assert base["graders"]["exact"]["metrics"]["pass_rate"]["estimate"] == 0.0
    assert tstack.emulator.calls("POST /v1/chat/completions") == 2 * len(PAIRS)
    # Priced from Together's list: a LoRA fine-tune at its base model's serverless price.
    assert float(tuned["cost_usd"]) > 0 and float(base["cost_usd"]) > 0

    # Our OpenAI-compatible chat completions forward the fine-tune, by Together's name and by ours, to Together.
    names = [m["id"] for m in tstack.get("/v1/models")["data"]]
    ours = next(n for n in names if n.startswith("ft:") and n.endswith(job["id"]))
    assert BASE in names
    for model in (done["fine_tuned_model"], ours):
        r = tstack.client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": PAIRS[3][0]}]},
            headers=tstack.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == PAIRS[3][1]


def test_cancel_while_running(tstack):
    ds = tstack.upload(_jsonl(PAIRS))
    # 16 rows x 20 epochs at batch size 1: 320 steps, about 3 s of real time at the emulator's speed.
    job = tstack.create_job(
        ds["id"], method={"type": "supervised", "hyperparameters": {"n_epochs": 20, "batch_size": 1}}
    )
    tstack.wait(job["id"], {"running"} | TERMINAL)
    r = tstack.client.post(f"/v1/jobs/{job['id']}/cancel", headers=tstack.headers)
    assert r.status_code in (200, 202), r.text
    done = tstack.wait(job["id"])
    assert done["status"] == "cancelled", done
    assert tstack.emulator.calls("POST /v1/fine-tunes/{job_id}/cancel") == 1
    assert [j["status"] for j in tstack.provider_jobs()] == ["cancelled"]


def test_full_dpo_job(tstack):
    """DPO on preference pairs with all weights trained: Together receives training_method dpo and training_type Full."""
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": text}]},
            "preferred_output": [{"role": "assistant", "content": label}],
            "non_preferred_output": [{"role": "assistant", "content": "I am not sure."}],
        }
        for text, label in PAIRS
    ]
    ds = tstack.upload("".join(json.dumps(r) + "\n" for r in rows).encode(), "pairs.jsonl")
    chat = tstack.upload(_jsonl(PAIRS))
    for ds_id, method in ((chat["id"], "dpo"), (ds["id"], "supervised")):  # data of the other method's shape
        r = tstack.client.post(
            "/v1/jobs",
            json={"training_dataset_id": ds_id, "provider": "together", "model": BASE, "method": {"type": method}},
            headers=tstack.headers,
        )
        assert r.status_code == 422 and r.json()["code"] == "dataset_method_mismatch", r.text
    job = tstack.create_job(
        ds["id"], method={"type": "dpo", "hyperparameters": {"training_type": "full", "dpo_beta": 0.2}}
    )
    assert float(job["estimated_cost_usd"]) > 0  # priced at the full-DPO rate
    done = tstack.wait(job["id"])
    assert done["status"] == "succeeded", done
    (pj,) = tstack.provider_jobs()
    assert pj["training_type"] == {"type": "Full"}
    assert pj["training_method"] == {"method": "dpo", "dpo_beta": 0.2}


def test_job_together_fails_carries_its_message(tstack):
    tstack.emulator.fail_jobs("doomed", "Training file has an invalid role on line 3")
    ds = tstack.upload(_jsonl(PAIRS))
    done = tstack.wait(tstack.create_job(ds["id"], suffix="doomed")["id"])
    assert done["status"] == "failed"
    assert done["error"]["message"] == "Training file has an invalid role on line 3"


def test_job_over_the_accounts_credit_limit_fails_before_creation(tstack):
    tstack.emulator.state.user_limit = 0.0
    ds = tstack.upload(_jsonl(PAIRS))
    done = tstack.wait(tstack.create_job(ds["id"])["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "insufficient_quota", done
    assert "credit limit of $0.0" in done["error"]["message"]
    assert tstack.provider_jobs() == [] and tstack.emulator.calls("POST /v1/fine-tunes/estimate-price") == 1


def test_bad_hyperparameters_are_refused_naming_the_field(tstack):
    ds = tstack.upload(_jsonl(PAIRS))
    for hp, field in (
        ({"n_epoch": 2}, "n_epoch"),
        ({"training_type": "full", "lora_r": 8}, "lora_r"),
        ({"dpo_beta": 0.1}, "dpo_beta"),
        ({"learning_rate": -1.0}, "learning_rate"),
    ):
        r = tstack.client.post(
            "/v1/jobs",
            json={
                "training_dataset_id": ds["id"],
                "provider": "together",
                "model": BASE,
                "method": {"type": "supervised", "hyperparameters": hp},
            },
            headers=tstack.headers,
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "invalid_hyperparameters" and field in r.json()["detail"], r.json()
    assert tstack.provider_jobs() == []


@pytest.mark.parametrize(
    ("route", "kind"),
    [
        (r"POST /v1/files/upload$", "429"),
        (r"POST /v1/files/upload$", "act_then_500"),  # Together stored the file; we never heard its id
        (r"GET /v1/files$", "500"),
        (r"GET /v1/fine-tunes$", "503"),
        (r"POST /v1/fine-tunes$", "429"),
        (r"POST /v1/fine-tunes$", "act_then_500"),  # Together made the job; we never heard its id
        (r"GET /v1/fine-tunes/ft-[^/]+$", "500"),
    ],
)
def test_faults_leave_one_file_and_one_job(tstack, route, kind):
    tstack.emulator.add_fault(route, kind, count=2, retry_after_seconds=0)
    ds = tstack.upload(_jsonl(PAIRS))
    done = tstack.wait(tstack.create_job(ds["id"])["id"])
    assert done["status"] == "succeeded", done
    assert len(tstack.provider_files()) == 1, tstack.provider_files()
    jobs = tstack.provider_jobs()
    assert len(jobs) == 1 and done["provider_job_id"] == jobs[0]["id"], jobs
    if kind.startswith("act_then"):
        # The retry finds what the failed call made (by content hash, by the tag in the suffix): never a second create.
        assert tstack.emulator.faults.rules()[0].fired == 1
        assert tstack.emulator.calls(route.rstrip("$")) == 1
    else:
        assert tstack.emulator.faults.rules()[0].fired == 2


def test_openai_shaped_route_trains_a_together_model(tstack):
    """The OpenAI SDK's call, naming a Together model: routed to Together, OpenAI's hyperparameters mapped."""
    ds = tstack.upload(_jsonl(PAIRS))
    r = tstack.client.post(
        "/v1/fine_tuning/jobs",
        json={
            "training_file": ds["id"],
            "model": BASE,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 2.0}},
            },
        },
        headers=tstack.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["hyperparameters"]["learning_rate_multiplier"] == 2.0
    done = tstack.wait(r.json()["id"])
    assert done["status"] == "succeeded", done
    (pj,) = tstack.provider_jobs()
    assert pj["learning_rate"] == pytest.approx(2e-5) and pj["n_epochs"] == 2


def test_provider_listing_and_models(tstack):
    listed = {p["name"]: p for p in tstack.get("/v1/providers")}
    caps = listed["together"]["capabilities"]
    assert caps["methods"] == ["supervised", "dpo"] and caps["training_types"] == ["lora", "full"]
    models = {m["id"]: m for m in tstack.get("/v1/providers/together/models")["data"]}
    assert models[BASE]["fine_tunable"] and models[BASE]["fine_tuning_methods"] == ["supervised", "dpo"]
    assert tstack.emulator.calls("GET /v1/fine-tunes/models/supported") == 1


def test_openai_recipe_moves_to_together_in_one_call(tstack):
    """POST /v1/jobs/{id}/rerun: the same data and recipe on Together, OpenAI's hyperparameters carried into Together's
    own ("auto" values mean Together's defaults), the renaming said in a warning."""
    ds = tstack.upload(_jsonl(PAIRS))
    body = {
        "training_dataset_id": ds["id"],
        "provider": "openai",
        "model": "gpt-4.1-mini-2025-04-14",
        "suffix": "tickets",
        "method": {"type": "supervised", "hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 1.5}},
    }
    r = tstack.client.post("/v1/jobs", json=body, headers=tstack.headers)
    assert r.status_code == 201, r.text
    r = tstack.client.post(
        f"/v1/jobs/{r.json()['id']}/rerun", json={"provider": "together", "model": BASE}, headers=tstack.headers
    )
    assert r.status_code == 201, r.text
    moved = r.json()
    assert moved["provider"] == "together" and moved["method"]["hyperparameters"]["n_epochs"] == 2
    assert any(w["code"] == "hyperparameters_dropped" for w in moved["warnings"])
    done = tstack.wait(moved["id"])
    assert done["status"] == "succeeded", done
    (pj,) = tstack.provider_jobs()
    assert pj["n_epochs"] == 2 and pj["suffix"].startswith("tickets-")
    # OpenAI's multiplier scales Together's base learning rate (1e-5).
    assert pj["learning_rate"] == pytest.approx(1.5e-5)


@pytest.mark.strict_outbound
def test_credentials_base_url_passes_the_outbound_policy(client, project):
    """A project's Together base URL is dialled by the workers: an internal address is refused when it is given."""
    for url in ("http://10.0.0.7/v1", "https://169.254.169.254/v1", "https://[::1]:8443/v1"):
        r = client.put(
            "/v1/providers/together/credentials",
            json={"api_key": "tg-key", "base_url": url},
            headers=project["headers"],
        )
        assert r.status_code == 422 and r.json()["code"] == "url_not_allowed", r.text
    ok = client.put(
        "/v1/providers/together/credentials", json={"api_key": "tg-key-0123456789"}, headers=project["headers"]
    )
    assert ok.status_code == 200 and ok.json()["hint"] == "6789" and ok.json()["base_url"] is None
