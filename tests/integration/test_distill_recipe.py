"""POST /v1/distillations end to end: the teacher's answers distilled into a dataset, split (frozen), a tiny local
student trained on the training part and evaluated against the teacher and its own base on the held-out prompts, each
step its own object, a report with agreement intervals and cost and latency per 1,000 requests, and the
``distillation.succeeded`` event for webhooks. Once with the emulator as a hosted teacher, once with a local
fine-tune as the teacher and no keys at all."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

pytest.importorskip("torch")
pytest.importorskip("peft")

# The tiny random-init model the local-training tests use (built from code, nothing downloaded).
_spec = importlib.util.spec_from_file_location(
    "local_training_models", Path(__file__).parents[1] / "unit" / "local_training" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_models)

TEACHER = "gpt-4o-mini-2024-07-18"
THINGS = _models.THINGS
COLOURS = _models.COLOURS
HYPERPARAMETERS = {"n_epochs": 2, "learning_rate": 0.005, "max_seq_length": 64, "eval_every_steps": 0}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    return _models.build_tiny_model_dir(tmp_path_factory.mktemp("tiny-student"))


def _prompts(n: int) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer with one colour."},
                {"role": "user", "content": f"What colour is the {THINGS[i % len(THINGS)]} {i}?"},
            ]
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _colour(_model: str, messages: list[dict[str, Any]]) -> str | None:
    text = messages[-1].get("content") or ""
    if not text.startswith("What colour is the"):
        return None
    return COLOURS[len(text) % len(COLOURS)]


def _upload(client, headers, content: bytes, name: str) -> dict[str, Any]:
    r = client.post("/v1/datasets", files={"file": (name, content)}, headers=headers)
    assert r.status_code in (200, 201), r.text
    return r.json()


def _run_recipe(client, headers, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/distillations", json=body, headers=headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"].startswith("dist_") and created["status"] == "distilling"
    assert created["steps"]["distill"]["id"].startswith("dsr_")

    def ended() -> dict[str, Any] | None:
        d = client.get(f"/v1/distillations/{created['id']}", headers=headers).json()
        return d if d["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(ended, timeout=280, interval=0.5)


def _check_steps(client, headers, done: dict[str, Any]) -> None:
    steps = done["steps"]
    assert steps["distill"]["status"] == "succeeded"
    assert steps["dataset"]["status"] == "ready"
    assert steps["train_split"]["status"] == steps["test_split"]["status"] == "ready"
    assert steps["job"]["status"] == "succeeded" and steps["evaluation"]["status"] == "succeeded"
    test = client.get(f"/v1/datasets/{steps['test_split']['id']}", headers=headers).json()
    assert test["source_dataset_id"] == steps["dataset"]["id"] and test["derivation"]["kind"] == "split"
    job = client.get(f"/v1/jobs/{steps['job']['id']}", headers=headers).json()
    assert job["training_dataset_id"] == steps["train_split"]["id"] and job["provider"] == "local"
    evaluation = client.get(f"/v1/evaluations/{steps['evaluation']['id']}", headers=headers).json()
    assert evaluation["dataset_id"] == steps["test_split"]["id"]
    assert {c["name"] for c in evaluation["candidates"]} == {"student", "teacher", "base"}
    events = client.get("/v1/events", params={"type": "distillation.succeeded"}, headers=headers).json()["data"]
    assert [e["data"]["object"]["id"] for e in events] == [done["id"]]


def _check_report(report: dict[str, Any]) -> None:
    agreement = report["agreement"]
    assert set(agreement) == {"student", "teacher", "base"}
    for by_grader in agreement.values():
        a = by_grader["exact_match"]
        assert a["n"] == 10 and 0 <= a["low"] <= a["estimate"] <= a["high"] <= 1
    # The teacher answers greedily: on the held-out prompts it agrees with itself.
    assert agreement["teacher"]["exact_match"]["estimate"] == 1.0
    assert "exact_match" in report["student_minus_base"]
    student = report["per_1000_requests"]["student"]
    assert student["cost_usd"] == "0" and "free" in student["cost_note"]
    assert student["latency_p50_s"] is not None and student["output_tokens"] > 0


def test_hosted_teacher_tiny_local_student(stack, tiny_model_dir):
    stack.emulator.core.config.answer_fn = _colour
    client, h = stack.client, stack.headers
    source = _upload(client, h, _prompts(20), "prompts.jsonl")
    done = _run_recipe(
        client,
        h,
        {
            "source_dataset_id": source["id"],
            "teacher": {"kind": "model", "name": "teacher", "model": TEACHER},
            "sampling": {"temperature": 0, "max_tokens": 4},
            "student": {"model": str(tiny_model_dir), "hyperparameters": HYPERPARAMETERS},
            "held_out": {"test_fraction": 0.5},
        },
    )
    assert done["status"] == "succeeded", done
    _check_steps(client, h, done)
    _check_report(done["report"])
    teacher = done["report"]["per_1000_requests"]["teacher"]
    assert float(teacher["cost_usd"]) > 0 and teacher["price_table_version"]
    # 20 prompts distilled, 10 held-out prompts answered again by the teacher in the evaluation.
    assert stack.emulator.core.calls()["POST /v1/chat/completions"] == 30


def test_local_teacher_runs_with_no_keys(client, project, worker, tiny_model_dir, monkeypatch):
    from service.settings import get_settings

    monkeypatch.delenv("FINETUNE_OPENAI_API_KEY", raising=False)
    assert get_settings().openai_api_key is None  # no key anywhere: every model here runs on this machine
    h = project["headers"]
    # The teacher: a local fine-tune of the tiny model on colour answers.
    train = _upload(
        client, h, "".join(json.dumps(r) + "\n" for r in _models.memorisable_examples(12)).encode(), "t.jsonl"
    )
    r = client.post(
        "/v1/jobs",
        json={
            "training_dataset_id": train["id"],
            "provider": "local",
            "model": str(tiny_model_dir),
            "method": {"type": "supervised", "hyperparameters": HYPERPARAMETERS},
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    teacher_job = wait_for(
        lambda: (
            (j := client.get(f"/v1/jobs/{r.json()['id']}", headers=h).json())["status"]
            in ("succeeded", "failed", "cancelled")
            and j
        ),
        timeout=180,
        interval=0.5,
    )
    assert teacher_job["status"] == "succeeded", teacher_job
    source = _upload(client, h, _prompts(20), "prompts.jsonl")
    done = _run_recipe(
        client,
        h,
        {
            "source_dataset_id": source["id"],
            "teacher": {"kind": "job", "name": "teacher", "job_id": teacher_job["id"]},
            "sampling": {"temperature": 0, "max_tokens": 4},
            # A random-init teacher may say the same for several prompts; keep them all.
            "filters": {"dedupe": {"exact": False}},
            "student": {"model": str(tiny_model_dir), "hyperparameters": HYPERPARAMETERS},
            "held_out": {"test_fraction": 0.5},
            "local_usd_per_hour": "2.50",
        },
    )
    assert done["status"] == "succeeded", done
    _check_steps(client, h, done)
    report = done["report"]
    teacher = report["per_1000_requests"]["teacher"]
    # Priced at the machine's hourly rate here, since it was given.
    assert teacher["model"] == f"local:{teacher_job['id']}" and "2.50 USD/hour" in teacher["cost_note"]
    assert report["agreement"]["teacher"]["exact_match"]["estimate"] == 1.0


def test_cancelling_the_recipe_cancels_its_step_and_keeps_the_answers(stack, tiny_model_dir):
    stack.emulator.core.config.answer_fn = _colour
    client, h = stack.client, stack.headers
    source = _upload(client, h, _prompts(40), "prompts.jsonl")
    r = client.post(
        "/v1/distillations",
        json={
            "source_dataset_id": source["id"],
            "teacher": {"kind": "model", "name": "teacher", "model": TEACHER},
            "limits": {"max_concurrency": 1, "requests_per_minute": 120},
            "student": {"model": str(tiny_model_dir), "hyperparameters": HYPERPARAMETERS},
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    recipe = r.json()
    wait_for(lambda: stack.emulator.calls("POST /v1/chat/completions") >= 4, timeout=60)
    cancelled = client.post(f"/v1/distillations/{recipe['id']}/cancel", headers=h)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    run = wait_for(
        lambda: (
            (x := client.get(f"/v1/datasets/distill/{recipe['steps']['distill']['id']}", headers=h).json())["status"]
            == "cancelled"
            and x
        ),
        timeout=60,
    )
    assert 4 <= run["counts"]["answered"] < 40 and run["dataset_id"]
    again = client.post(f"/v1/distillations/{recipe['id']}/cancel", headers=h)
    assert again.status_code == 409 and again.json()["code"] == "distillation_not_cancellable"
    events = client.get("/v1/events", params={"type": "distillation.cancelled"}, headers=h).json()["data"]
    assert [e["data"]["object"]["id"] for e in events] == [recipe["id"]]
    # Nothing after the distillation was started.
    done = client.get(f"/v1/distillations/{recipe['id']}", headers=h).json()
    assert done["steps"]["job"]["id"] is None and done["steps"]["evaluation"]["id"] is None


def _ended(client, headers, distillation_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (d := client.get(f"/v1/distillations/{distillation_id}", headers=headers).json())["status"]
            in ("succeeded", "failed", "cancelled")
            and d
        ),
        timeout=120,
        interval=0.2,
    )


def test_a_held_out_part_too_small_to_validate_fails_the_recipe_naming_it(stack, tiny_model_dir):
    stack.emulator.core.config.answer_fn = _colour
    client, h = stack.client, stack.headers
    source = _upload(client, h, _prompts(12), "prompts.jsonl")
    body = {
        "source_dataset_id": source["id"],
        "teacher": {"kind": "model", "name": "teacher", "model": TEACHER},
        "student": {"model": str(tiny_model_dir), "hyperparameters": HYPERPARAMETERS},
        "held_out": {"test_fraction": 0.5},
    }
    r = client.post("/v1/distillations", json=body, headers=h)
    assert r.status_code == 201, r.text
    done = _ended(client, h, r.json()["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "dataset_invalid", done
    assert "at least 10 are required" in done["error"]["message"]
    assert done["steps"]["test_split"]["status"] == "invalid" and done["steps"]["job"]["id"] is None
    events = client.get("/v1/events", params={"type": "distillation.failed"}, headers=h).json()["data"]
    assert [e["data"]["object"]["id"] for e in events] == [done["id"]]


def test_a_teacher_that_cannot_answer_fails_the_recipe(stack, tiny_model_dir):
    client, h = stack.client, stack.headers
    source = _upload(client, h, _prompts(12), "prompts.jsonl")
    body = {
        "source_dataset_id": source["id"],
        "teacher": {"kind": "model", "name": "teacher", "model": "gpt-no-such-model"},
        "student": {"model": str(tiny_model_dir), "hyperparameters": HYPERPARAMETERS},
    }
    r = client.post("/v1/distillations", json=body, headers=h)
    assert r.status_code == 201, r.text
    done = _ended(client, h, r.json()["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "distillation_failed", done
    assert "gpt-no-such-model" in done["error"]["message"]
    assert done["steps"]["distill"]["status"] == "failed" and done["steps"]["dataset"]["id"] is None


def test_a_bad_student_is_refused_before_the_teacher_is_asked(stack, tiny_model_dir):
    client, h = stack.client, stack.headers
    source = _upload(client, h, _prompts(12), "prompts.jsonl")
    body = {
        "source_dataset_id": source["id"],
        "teacher": {"kind": "model", "name": "teacher", "model": TEACHER},
        "student": {"model": str(tiny_model_dir), "hyperparameters": {"n_epochs": "many"}},
    }
    r = client.post("/v1/distillations", json=body, headers=h)
    assert r.status_code == 422 and r.json()["code"] == "invalid_hyperparameters", r.text
    assert r.json()["field"] == "student.hyperparameters"
    r = client.post("/v1/distillations", json={**body, "student": {"provider": "nope", "model": "m"}}, headers=h)
    assert r.status_code == 422 and r.json()["code"] == "unknown_provider", r.text
    assert stack.emulator.calls("POST /v1/chat/completions") == 0
    assert client.get("/v1/distillations", headers=h).json()["data"] == []
