"""What a finished OpenAI job leaves: the complete training curve from the result file, and the shutdown dates of the
models involved (the provider's model list, and warnings on jobs whose fine-tuned model stops serving)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from helpers import wait_for


def _finished_job(stack, chat_jsonl, **extra):
    ds = stack.upload(chat_jsonl)
    body = {"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-4.1-mini-2025-04-14"} | extra
    r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    return wait_for(
        lambda: (j := stack.get(f"/v1/jobs/{job_id}"))["status"] in ("succeeded", "failed", "cancelled") and j,
        timeout=60,
    )


@pytest.fixture
def on_day(monkeypatch):
    """Move the service's clock to a given day (shutdown warnings depend on today)."""
    from service import clock

    def travel(day: date) -> None:
        clock.reset()
        now = clock.utcnow()
        clock.travel(datetime.combine(day, now.timetz()) - now)

    yield travel
    clock.reset()


def test_metrics_are_completed_by_the_result_file(stack, chat_jsonl, settings):
    from sqlmodel import delete, select

    from service.db import session_scope
    from service.jobs.models import JobEvent

    job = _finished_job(
        stack, chat_jsonl, validation_dataset_id=stack.upload(chat_jsonl.replace(b"Ticket", b"Case"))["id"]
    )
    assert job["status"] == "succeeded", job
    provider_job = stack.emulator.state()["jobs"][0]
    total_steps = provider_job["trained_tokens"] and len(
        stack.emulator.core.store.jobs[provider_job["id"]].metrics_rows
    )

    metrics = stack.get(f"/v1/jobs/{job['id']}/metrics")
    assert metrics["complete"] is True and metrics["steps"]["result_file"] == total_steps
    assert [p["step"] for p in metrics["points"]] == list(range(1, total_steps + 1))
    for p in metrics["points"]:
        assert {"train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"} <= set(p), p

    # The events list says the result file came, without its rows.
    events = []
    cursor = None
    while True:
        page = stack.get(f"/v1/jobs/{job['id']}/events", limit=100, **({"after": cursor} if cursor else {}))
        events += page["data"]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    result_events = [e for e in events if e["type"] == "result_file"]
    assert len(result_events) == 1 and result_events[0]["data"]["steps"] == total_steps
    assert result_events[0]["data"]["file_id"] == provider_job["result_files"][0]

    # Events are partial (as when a provider trims its event list): the result file still gives every step.
    with session_scope(settings) as s:
        ids = [e.id for e in s.exec(select(JobEvent).where(JobEvent.job_id == job["id"], JobEvent.type == "metrics"))]
        s.exec(delete(JobEvent).where(JobEvent.id.in_(ids[::2])))
    after = stack.get(f"/v1/jobs/{job['id']}/metrics")
    assert after["steps"]["events"] < total_steps and after["steps"]["result_file"] == total_steps
    assert after["points"] == metrics["points"]


def test_a_missing_result_file_does_not_hold_back_success(stack, chat_jsonl):
    stack.emulator.add_fault(r"^GET /v1/files/[^/]+/content$", "500", count=100)
    job = _finished_job(stack, chat_jsonl)
    assert job["status"] == "succeeded", job
    metrics = stack.get(f"/v1/jobs/{job['id']}/metrics")
    assert metrics["complete"] is False and metrics["steps"]["events"] > 0 and metrics["points"]
    messages = [e["message"] for e in stack.get(f"/v1/jobs/{job['id']}/events", limit=100)["data"]]
    assert any("result file unavailable" in m for m in messages)


def _models(stack, provider="openai"):
    return {m["id"]: m for m in stack.get(f"/v1/providers/{provider}/models")["data"]}


def test_openai_models_with_shutdown_dates_and_warnings(stack, chat_jsonl, on_day):
    job = _finished_job(stack, chat_jsonl, suffix="tickets")
    assert job["status"] == "succeeded"

    on_day(date(2026, 10, 1))  # 105 days before the gpt-4.1 shutdown
    models = _models(stack)
    mini = models["gpt-4.1-mini-2025-04-14"]
    assert mini["fine_tunable"] is True and mini["fine_tuning_methods"] == ["supervised", "dpo"]
    assert mini["shutdown_date"] == "2027-01-14" and mini["shutdown_date_source"] == "provider"
    assert mini["price_table_version"] and mini["training_per_1m_usd"]
    assert mini["warnings"] == []
    assert models["gpt-5"]["fine_tunable"] is False and models["gpt-5"]["shutdown_date"] is None
    tuned = models[job["fine_tuned_model"]]
    assert tuned["fine_tuned"] is True and tuned["base_model"] == "gpt-4.1-mini-2025-04-14"
    assert tuned["shutdown_date"] == "2027-01-14"
    codes_then = {w["code"] for w in stack.get(f"/v1/jobs/{job['id']}")["warnings"]}
    assert not any(c.startswith("fine_tuned_model_") for c in codes_then), codes_then  # nothing date-bound yet

    on_day(date(2026, 12, 1))  # 44 days before: shutting down soon, and OpenAI closes to new jobs soon
    models = _models(stack)
    codes = {w["code"] for w in models["gpt-4.1-mini-2025-04-14"]["warnings"]}
    assert codes == {"model_shutdown_soon", "fine_tuning_closing"}
    assert {w["code"] for w in models[job["fine_tuned_model"]]["warnings"]} >= {"fine_tuned_model_shutdown_soon"}
    job_codes = [w["code"] for w in stack.get(f"/v1/jobs/{job['id']}")["warnings"]]
    assert job_codes.count("fine_tuned_model_shutdown_soon") == 1

    on_day(date(2027, 1, 10))  # no new OpenAI jobs any more
    mini = _models(stack)["gpt-4.1-mini-2025-04-14"]
    assert mini["fine_tunable"] is False and "fine_tuning_closed" in {w["code"] for w in mini["warnings"]}

    on_day(date(2027, 2, 1))
    mini = _models(stack)["gpt-4.1-mini-2025-04-14"]
    assert "model_shut_down" in {w["code"] for w in mini["warnings"]}
    assert "fine_tuned_model_shut_down" in {w["code"] for w in stack.get(f"/v1/jobs/{job['id']}")["warnings"]}


def test_local_models_and_unknown_provider(stack):
    from service.providers.local import DEFAULT_BASE_MODEL, is_available

    r = stack.client.get("/v1/providers/local/models", headers=stack.headers)
    if is_available()[0]:
        assert r.status_code == 200, r.text
        local = {m["id"]: m for m in r.json()["data"]}
        assert local[DEFAULT_BASE_MODEL]["fine_tunable"] is True and local[DEFAULT_BASE_MODEL]["warnings"] == []
        assert "supervised" in local[DEFAULT_BASE_MODEL]["fine_tuning_methods"]
    else:
        assert r.status_code == 503
    r = stack.client.get("/v1/providers/nope/models", headers=stack.headers)
    assert r.status_code == 422 and r.json()["code"] == "unknown_provider"


def test_models_need_a_key(settings, project, client, monkeypatch):
    monkeypatch.delenv("FINETUNE_OPENAI_API_KEY", raising=False)
    r = client.get("/v1/providers/openai/models", headers=project["headers"])
    assert r.status_code == 503 and r.json()["code"] == "provider_credentials_missing"
