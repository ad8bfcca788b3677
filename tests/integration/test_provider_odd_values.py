"""Odd but valid values from the provider (the published description allows them, no real job gives them): a job that
succeeds without a fine-tuned model, one that trains a negative number of tokens, one that fails without an error.
Each is flagged on the job as a provider anomaly through the API, the odd value is not stored as a fact, and no cost
is computed from it."""

from __future__ import annotations

import logging

from helpers import wait_for


def _run(stack, chat_jsonl, odd: str) -> dict:  # type: ignore[no-untyped-def]
    dataset = stack.upload(chat_jsonl)["id"]
    body = {
        "provider": "openai",
        "model": "gpt-4.1-mini-2025-04-14",
        "training_dataset_id": dataset,
        "metadata": {"emulator_odd": odd},
    }
    r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    return wait_for(
        lambda: (j := stack.get(f"/v1/jobs/{job_id}"))["status"] in ("succeeded", "failed", "cancelled") and j,
        timeout=60,
    )


def _codes(job: dict) -> list[str]:
    return [a["code"] for a in job["provider_anomalies"]]


def test_negative_trained_tokens_are_flagged_and_never_priced(stack, chat_jsonl, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="service.jobs.steps")
    job = _run(stack, chat_jsonl, "negative_trained_tokens")
    assert job["status"] == "succeeded", job
    (anomaly,) = job["provider_anomalies"]
    assert anomaly["code"] == "negative_trained_tokens" and anomaly["field"] == "trained_tokens"
    assert anomaly["value"] < 0
    assert job["trained_tokens"] is None and job["actual_cost_usd"] is None
    assert job["fine_tuned_model"]
    # The log names the cause, not a missing price.
    assert "no training price" not in caplog.text
    assert "trained_tokens" in caplog.text and "anomaly" in caplog.text


def test_success_without_a_model_is_flagged(stack, chat_jsonl) -> None:  # type: ignore[no-untyped-def]
    job = _run(stack, chat_jsonl, "succeeded_without_model")
    assert job["status"] == "succeeded", job
    assert _codes(job) == ["succeeded_without_model"]
    assert job["fine_tuned_model"] is None
    # Its tokens are plausible, so they are kept and priced.
    assert job["trained_tokens"] > 0 and job["actual_cost_usd"] is not None


def test_failure_without_an_error_is_flagged(stack, chat_jsonl) -> None:  # type: ignore[no-untyped-def]
    job = _run(stack, chat_jsonl, "failed_without_error")
    assert job["status"] == "failed", job
    assert _codes(job) == ["failed_without_error"]
    assert job["provider_anomalies"][0]["field"] == "error"


def test_a_plain_job_has_no_anomalies(stack, chat_jsonl) -> None:  # type: ignore[no-untyped-def]
    dataset = stack.upload(chat_jsonl)["id"]
    body = {"provider": "openai", "model": "gpt-4.1-mini-2025-04-14", "training_dataset_id": dataset}
    job_id = stack.client.post("/v1/jobs", json=body, headers=stack.headers).json()["id"]
    job = wait_for(lambda: (j := stack.get(f"/v1/jobs/{job_id}"))["status"] == "succeeded" and j, timeout=60)
    assert job["provider_anomalies"] == [] and job["actual_cost_usd"] is not None
