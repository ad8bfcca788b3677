"""Evaluations end to end on the OpenAI emulator: a job that asks for an evaluation gets one on success, and the
fine-tuned model comes out ahead of its base with intervals; the API's samples, filters, cancel and resume."""

from __future__ import annotations

import json

import pytest

from helpers import wait_for

LABELS = ("billing", "account", "shipping", "refund")
BASE = "gpt-4.1-mini-2025-04-14"


def _examples(n: int, offset: int = 0) -> list[tuple[str, str]]:
    return [
        (f"Ticket {i}: issue number {7000 + i} needs routing", LABELS[(i * 7) % 4]) for i in range(offset, offset + n)
    ]


def _jsonl(pairs: list[tuple[str, str]]) -> bytes:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Route the ticket. Answer with one label."},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": label},
                ]
            }
        )
        + "\n"
        for text, label in pairs
    ).encode()


TRAIN = _examples(20)
TEST = _examples(80, offset=100)


@pytest.fixture
def emulator():  # overrides the integration conftest's: answers depend on whether the model is fine-tuned
    from emulator import EmulatorConfig, JobTiming, OpenAIEmulator

    config = EmulatorConfig(
        speed=200.0,
        job_timing=JobTiming(validating_seconds=10, queued_seconds=10, step_seconds=2),
        correct_answers=dict(TRAIN + TEST),
        fine_tuned_accuracy=0.95,
        base_accuracy=0.25,
    )
    with OpenAIEmulator(config) as emu:
        yield emu


def _wait(stack, path: str, statuses: set[str], timeout: float = 60.0) -> dict:
    return wait_for(lambda: (o := stack.get(path)) and o["status"] in statuses and o, timeout=timeout)


def test_job_evaluation_shows_fine_tuned_ahead_of_base(stack):
    train = stack.upload(_jsonl(TRAIN), "train.jsonl")
    test = stack.upload(_jsonl(TEST), "test.jsonl")
    body = {
        "training_dataset_id": train["id"],
        "provider": "openai",
        "model": BASE,
        "evaluation": {
            "dataset_id": test["id"],
            "graders": [
                {"type": "exact_match", "name": "exact"},
                {"type": "classification", "name": "labels", "labels": list(LABELS)},
            ],
            "few_shot_k": 3,
        },
    }
    r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    # The evaluation is started by a subscriber to job.succeeded, just after the job's own transition.
    job = wait_for(
        lambda: (o := stack.get(f"/v1/jobs/{r.json()['id']}"))
        and (o["status"] in ("failed", "cancelled") or (o["status"] == "succeeded" and o["evaluation_id"]))
        and o,
        timeout=60.0,
    )
    assert job["status"] == "succeeded", job
    assert job["evaluation_id"], "the evaluation is attached to the job"

    ev = _wait(stack, f"/v1/evaluations/{job['evaluation_id']}", {"succeeded", "failed", "cancelled"})
    assert ev["status"] == "succeeded", ev
    assert ev["job_id"] == job["id"] and ev["baseline"] == "base"
    names = [c["candidate"] for c in ev["results"]["candidates"]]
    assert names == ["base", "base-3-shot", "fine-tuned"]
    by_name = {c["candidate"]: c for c in ev["results"]["candidates"]}
    tuned, base = by_name["fine-tuned"], by_name["base"]
    assert tuned["model"] == job["fine_tuned_model"]
    assert tuned["n"] == base["n"] == len(TEST) and tuned["n_failed"] == 0
    acc_t = tuned["graders"]["exact"]["metrics"]["pass_rate"]
    acc_b = base["graders"]["exact"]["metrics"]["pass_rate"]
    assert acc_t["estimate"] > acc_b["estimate"]
    assert acc_t["low"] <= acc_t["estimate"] <= acc_t["high"] and acc_t["n"] == len(TEST)
    assert tuned["cost_usd"] is not None and tuned["input_tokens"] > 0
    assert tuned["latency_p50_s"] is not None
    assert "confusion_matrix" in json.dumps(tuned["graders"]["labels"]["details"])

    comparison = next(c for c in ev["results"]["comparisons"] if c["candidate"] == "fine-tuned")
    diff = comparison["graders"]["exact"]["metrics"]["pass_rate"]
    assert diff["difference"] > 0 and diff["low"] > 0, diff  # the interval excludes no improvement
    assert diff["p_value"] < 0.01 and diff["test"].startswith("mcnemar")
    flips = comparison["graders"]["exact"]["flips"]
    assert len(flips["b_only"]) > len(flips["a_only"])

    # The per-sample view: inputs, outputs, scores; filtered to the examples that flipped.
    page = stack.get(f"/v1/evaluations/{ev['id']}/samples", candidate="fine-tuned", limit=100)
    assert len(page["data"]) == len(TEST)
    sample = page["data"][0]
    assert sample["input"][-1]["role"] == "user" and sample["reference"] in LABELS
    assert set(sample["scores"]) == {"exact", "labels"} and sample["ok"]
    flipped = stack.get(f"/v1/evaluations/{ev['id']}/samples", candidate="fine-tuned", only="disagreements", limit=100)
    assert {s["example_index"] for s in flipped["data"]} >= {int(k.split(":")[1]) for k in flips["b_only"]}

    types = [e["type"] for e in stack.get("/v1/events", limit=100)["data"]]
    assert "evaluation.succeeded" in types
    # Every (candidate, example) was asked exactly once.
    assert stack.emulator.calls("POST /v1/chat/completions") == 3 * len(TEST)

    # A checkpoint is a candidate too.
    checkpoints = stack.get(f"/v1/jobs/{job['id']}/checkpoints")["data"]
    step = next(c["step"] for c in checkpoints if c["model"] and c["model"] != job["fine_tuned_model"])
    body = {
        "dataset_id": test["id"],
        "candidates": [{"kind": "job", "name": "checkpoint", "job_id": job["id"], "checkpoint_step": step}],
        "max_examples": 10,
    }
    r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    ev = _wait(stack, f"/v1/evaluations/{r.json()['id']}", {"succeeded", "failed"})
    assert ev["status"] == "succeeded", ev
    result = ev["results"]["candidates"][0]
    assert result["n"] == 10 and result["model"] == next(c["model"] for c in checkpoints if c["step"] == step)


def test_evaluation_api_validation_and_isolation(stack, other_project):
    test = stack.upload(_jsonl(TEST[:20]), "test.jsonl")
    train = stack.upload(_jsonl(TRAIN), "train.jsonl")
    bad = [
        ({"candidates": [{"kind": "model", "name": "a", "model": BASE}] * 2}, 422),
        ({"candidates": [{"kind": "model", "name": "a", "model": BASE}], "baseline": "zzz"}, 422),
        ({"candidates": [{"kind": "job", "name": "a", "job_id": "job_missing"}]}, 404),
        ({"candidates": [{"kind": "endpoint", "name": "a", "model": "m", "base_url": "ftp://x"}]}, 422),
        ({"candidates": [{"kind": "model", "name": "a", "model": BASE}], "graders": [{"type": "nope"}]}, 422),
    ]
    for extra, status in bad:
        r = stack.client.post("/v1/evaluations", json={"dataset_id": test["id"]} | extra, headers=stack.headers)
        assert r.status_code == status, (extra, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = stack.client.post(
        "/v1/evaluations",
        json={"dataset_id": "ds_nope", "candidates": [{"kind": "model", "name": "a", "model": BASE}]},
        headers=stack.headers,
    )
    assert r.status_code == 404

    body = {
        "dataset_id": test["id"],
        "candidates": [
            {"kind": "model", "name": "base", "model": BASE},
            {
                "kind": "endpoint",
                "name": "gateway",
                "model": BASE,
                "base_url": stack.emulator.base_url,
                "api_key": "sk-secret-gateway-key",
            },
        ],
        "overfit_check": {"dataset_id": train["id"], "size": 5},
    }
    r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert "sk-secret-gateway-key" not in r.text and created["candidates"][1]["api_key_set"] is True
    ev = _wait(stack, f"/v1/evaluations/{created['id']}", {"succeeded", "failed"})
    assert ev["status"] == "succeeded", ev
    # Same model, same deterministic answers: no difference between the two routes to it.
    comparison = ev["results"]["comparisons"][0]["graders"]["exact_match"]["metrics"]["pass_rate"]
    assert comparison["difference"] == 0
    # The overfitting check: the same graders on 5 training examples, kept apart from the held-out figures.
    base = ev["results"]["candidates"][0]
    assert base["n"] == 20 and base["train_graders"]["exact_match"]["n"] == 5
    assert ev["progress"]["train_examples"] == 5

    for path in (f"/v1/evaluations/{ev['id']}", f"/v1/evaluations/{ev['id']}/samples"):
        assert stack.client.get(path, headers=other_project["headers"]).status_code == 404
    assert stack.client.post(f"/v1/evaluations/{ev['id']}/cancel", headers=other_project["headers"]).status_code == 404
    assert stack.client.post(f"/v1/evaluations/{ev['id']}/cancel", headers=stack.headers).status_code == 409
    listed = stack.get("/v1/evaluations")
    assert [e["id"] for e in listed["data"]] == [ev["id"]]
    graders = stack.client.get("/v1/graders", headers=stack.headers).json()
    assert any(g["type"] == "llm_rubric" for g in graders)


def test_cancel_keeps_partial_results_and_failed_endpoint_fails_cleanly(stack):
    test = stack.upload(_jsonl(TEST), "test.jsonl")
    body = {
        "dataset_id": test["id"],
        "candidates": [{"kind": "model", "name": "base", "model": BASE}],
        "limits": {"max_concurrency": 1, "requests_per_minute": 120},
    }
    created = stack.client.post("/v1/evaluations", json=body, headers=stack.headers).json()
    wait_for(
        lambda: stack.get(f"/v1/evaluations/{created['id']}")["progress"]["candidates"].get("base", {}).get("done")
    )
    r = stack.client.post(f"/v1/evaluations/{created['id']}/cancel", headers=stack.headers)
    assert r.status_code == 200 and r.json()["cancel_requested"]
    ev = _wait(stack, f"/v1/evaluations/{created['id']}", {"cancelled"})
    done = ev["results"]["candidates"][0]["n"]
    assert 0 < done < len(TEST), "stopped part-way, with what it had summarised"
    assert "evaluation.cancelled" in [e["type"] for e in stack.get("/v1/events", limit=100)["data"]]

    body = {"dataset_id": test["id"], "candidates": [{"kind": "model", "name": "ghost", "model": "no-such-model"}]}
    created = stack.client.post("/v1/evaluations", json=body, headers=stack.headers).json()
    ev = _wait(stack, f"/v1/evaluations/{created['id']}", {"failed", "succeeded"})
    assert ev["status"] == "failed" and ev["error"]["candidate"] == "ghost", ev
    assert "evaluation.failed" in [e["type"] for e in stack.get("/v1/events", limit=100)["data"]]


def test_resume_skips_stored_samples(stack):
    """A worker that died mid-run leaves its samples; the next run asks only for the rest."""
    from service.db import session_scope
    from service.evaluations.models import Evaluation, EvaluationSample

    test = stack.upload(_jsonl(TEST[:30]), "test.jsonl")
    body = {"dataset_id": test["id"], "candidates": [{"kind": "model", "name": "base", "model": BASE}]}
    created = stack.client.post("/v1/evaluations", json=body, headers=stack.headers).json()
    ev = _wait(stack, f"/v1/evaluations/{created['id']}", {"succeeded"})
    assert stack.emulator.calls("POST /v1/chat/completions") == 30

    # Rewind: drop 10 samples and the result, as if the worker had been killed after 20 answers.
    with session_scope() as s:
        rows = s.exec(
            EvaluationSample.__table__.select().where(EvaluationSample.evaluation_id == ev["id"])  # type: ignore[attr-defined]
        ).all()
        for row in rows[20:]:
            s.delete(s.get(EvaluationSample, row.id))
        row = s.get(Evaluation, ev["id"])
        row.status, row.summary, row.finished_at = "running", None, None
        from service.clock import utcnow

        row.next_run_at = utcnow()
        s.add(row)
    ev = _wait(stack, f"/v1/evaluations/{ev['id']}", {"succeeded"})
    assert ev["results"]["candidates"][0]["n"] == 30
    assert stack.emulator.calls("POST /v1/chat/completions") == 40, "only the 10 missing answers were requested"


def test_batch_mode_goes_through_the_batch_api_at_half_price(stack):
    test = stack.upload(_jsonl(TEST[:40]), "test.jsonl")
    body = {
        "dataset_id": test["id"],
        "candidates": [{"kind": "model", "name": "base", "model": BASE}],
        "mode": "batch",
    }
    created = stack.client.post("/v1/evaluations", json=body, headers=stack.headers).json()
    ev = _wait(stack, f"/v1/evaluations/{created['id']}", {"succeeded", "failed"}, timeout=90)
    assert ev["status"] == "succeeded", ev
    assert stack.emulator.calls("POST /v1/chat/completions") == 0
    assert stack.emulator.calls("POST /v1/batches") == 1
    result = ev["results"]["candidates"][0]
    assert result["n"] == 40 and result["n_failed"] == 0

    from decimal import Decimal

    from service.pricing.estimates import inference_cost

    full = inference_cost(BASE, result["input_tokens"], result["output_tokens"])
    assert Decimal(result["cost_usd"]) == inference_cost(
        BASE, result["input_tokens"], result["output_tokens"], batch=True
    )
    assert Decimal(result["cost_usd"]) < full


def _judge(_model, messages):
    """The emulator as a judge that knows the reference: full marks (or the win) for the answer equal to it."""
    import re

    text = messages[-1]["content"] if messages else ""

    def section(tag):
        m = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S)
        return m.group(1).strip() if m else None

    reference = section("reference_answer")
    if section("rubric") is not None:
        return "Checked against the reference.\nSCORE: " + ("5" if section("response") == reference else "1")
    if section("criteria") is not None:
        a, b = section("response_a") == reference, section("response_b") == reference
        return "Compared.\nWINNER: " + ("TIE" if a == b else "A" if a else "B")
    return None  # not a judge prompt: the usual deterministic answers


def test_llm_judges_rubric_and_pairwise_in_both_orders(settings, worker, project, monkeypatch):
    from fastapi.testclient import TestClient

    from emulator import EmulatorConfig, OpenAIEmulator
    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    config = EmulatorConfig(correct_answers=dict(TEST), base_accuracy=0.5, answer_fn=_judge)
    with OpenAIEmulator(config) as emu:
        monkeypatch.setenv("FINETUNE_OPENAI_API_KEY", "sk-test-emulator")
        monkeypatch.setenv("FINETUNE_OPENAI_BASE_URL", emu.base_url)
        reset_settings_cache()
        with TestClient(create_app(get_settings())) as client:
            h = project["headers"]
            content = _jsonl(TEST[:30])
            test = client.post("/v1/datasets", files={"file": ("t.jsonl", content)}, headers=h).json()
            body = {
                "dataset_id": test["id"],
                "candidates": [
                    {"kind": "model", "name": "a", "model": BASE},
                    {"kind": "model", "name": "b", "model": "gpt-4o-mini-2024-07-18"},
                ],
                "graders": [
                    {"type": "exact_match", "name": "exact"},
                    {"type": "llm_rubric", "name": "rubric", "model": BASE, "rubric": "Is it the right label?"},
                    {"type": "llm_pairwise", "name": "pairwise", "model": BASE, "criteria": "The right label wins."},
                ],
            }
            r = client.post("/v1/evaluations", json=body, headers=h)
            assert r.status_code == 201, r.text
            ev = wait_for(
                lambda: (
                    (e := client.get(f"/v1/evaluations/{r.json()['id']}", headers=h).json())["status"]
                    in ("succeeded", "failed")
                    and e
                ),
                timeout=60,
            )
    assert ev["status"] == "succeeded", ev
    for c in ev["results"]["candidates"]:
        exact = c["graders"]["exact"]["metrics"]["pass_rate"]["estimate"]
        rubric = c["graders"]["rubric"]["metrics"]["pass_rate"]["estimate"]
        assert rubric == exact, "the judge passes exactly the answers equal to the reference"
    pairwise = ev["results"]["pairwise"]["b"]["pairwise"]
    details = pairwise["details"]
    assert details["n_inconsistent"] == 0 and details["consistency_rate"] == 1.0
    exact_cmp = ev["results"]["comparisons"][0]["graders"]["exact"]["mcnemar"]
    # b wins exactly where only b is right, a where only a is right; the rest are ties.
    assert details["n_b"] == exact_cmp["b_only"] and details["n_a"] == exact_cmp["a_only"]
    # 60 answers; then the rubric once per (candidate, example) and the pairwise judge in both orders, except that
    # identical judge prompts (same answer, same reference) hit the verdict cache instead of the judge.
    judge_calls = emu.calls("POST /v1/chat/completions") - 2 * 30
    assert 30 + 30 <= judge_calls < 2 * 30 + 2 * 30
