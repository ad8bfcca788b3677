"""Prometheus /metrics: protection, HTTP latency by route template, jobs and evaluations by status from the database,
Celery tasks by state, webhook delivery outcomes and lag, provider errors."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_for
from service import metrics


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def admin_client(settings, monkeypatch):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_ADMIN_KEY", "admin-key-for-tests-0123456789")
    reset_settings_cache()
    with TestClient(create_app(get_settings()), raise_server_exceptions=False) as c:
        c.admin = {"Authorization": "Bearer admin-key-for-tests-0123456789"}  # type: ignore[attr-defined]
        yield c


def test_metrics_need_the_admin_key(admin_client, project):
    assert admin_client.get("/metrics").status_code == 401
    assert admin_client.get("/metrics", headers=project["headers"]).status_code == 401
    r = admin_client.get("/metrics", headers=admin_client.admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "finetune_http_request_duration_seconds" in r.text


def test_metrics_off_without_an_admin_key_unless_public(client, settings):
    r = client.get("/metrics")
    assert r.status_code == 403 and r.json()["code"] == "admin_disabled"
    client.app.state.settings = settings.model_copy(update={"metrics_public": True})
    assert client.get("/metrics").status_code == 200


def test_http_latency_is_labelled_by_route_template(admin_client, project):
    before = sample(
        "finetune_http_request_duration_seconds_count", method="GET", route="/v1/jobs/{job_id}", status="404"
    )
    for i in range(3):
        assert admin_client.get(f"/v1/jobs/job_missing{i}", headers=project["headers"]).status_code == 404
    text = admin_client.get("/metrics", headers=admin_client.admin).text
    got = scrape(text)
    key = (
        "finetune_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")),
    )
    assert got[key] == before + 3
    # Raw paths never become labels (one series per id would grow without bound).
    assert "job_missing" not in text
    # Unknown paths share one label.
    admin_client.get("/nothing/here/123")
    assert sample("finetune_http_request_duration_seconds_count", method="GET", route="unmatched", status="404") >= 1


def test_jobs_and_evaluations_by_status_come_from_the_database(admin_client, project, settings, chat_jsonl):
    from service.db import session_scope
    from service.evaluations.models import Evaluation
    from service.jobs.models import Job

    ds = admin_client.post("/v1/datasets", files={"file": ("t.jsonl", chat_jsonl)}, headers=project["headers"]).json()
    with session_scope(settings) as s:
        for status in ("running", "running", "failed"):
            s.add(
                Job(
                    project_id=project["id"],
                    provider="openai",
                    base_model="gpt-4.1-mini-2025-04-14",
                    method={"type": "supervised"},
                    training_dataset_id=ds["id"],
                    status=status,
                )
            )
        s.add(Evaluation(project_id=project["id"], status="queued", dataset_id=ds["id"]))
    got = scrape(admin_client.get("/metrics", headers=admin_client.admin).text)
    assert got[("finetune_jobs", (("status", "running"),))] == 2
    assert got[("finetune_jobs", (("status", "failed"),))] == 1
    assert got[("finetune_jobs", (("status", "succeeded"),))] == 0  # every state is there, empty ones at 0
    assert got[("finetune_evaluations", (("status", "queued"),))] == 1


def test_celery_tasks_are_counted_by_name_and_state(settings, worker):
    from service import queue

    started = sample("finetune_celery_tasks_total", task="events.fanout", state="started")
    done = sample("finetune_celery_tasks_total", task="events.fanout", state="succeeded")
    assert queue.enqueue("events.fanout", "evt_does_not_exist")
    wait_for(lambda: sample("finetune_celery_tasks_total", task="events.fanout", state="succeeded") == done + 1)
    assert sample("finetune_celery_tasks_total", task="events.fanout", state="started") == started + 1
    assert sample("finetune_celery_tasks_running", task="events.fanout") == 0
    assert sample("finetune_celery_task_duration_seconds_count", task="events.fanout") >= 1


class Receiver:
    def __init__(self) -> None:
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                receiver.hits += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_webhook_delivery_outcome_and_lag(settings, project, worker, monkeypatch):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("FINETUNE_WEBHOOK_ALLOWLIST", '["127.0.0.1/32"]')
    reset_settings_cache()
    receiver = Receiver()
    try:
        successes = sample("finetune_webhook_deliveries_total", outcome="success")
        lags = sample("finetune_webhook_delivery_lag_seconds_count")
        with TestClient(create_app(get_settings()), raise_server_exceptions=False) as c:
            h = project["headers"]
            ep = c.post("/v1/webhook-endpoints", json={"url": receiver.url}, headers=h).json()
            assert c.post(f"/v1/webhook-endpoints/{ep['id']}/test", headers=h).status_code == 202
            wait_for(lambda: sample("finetune_webhook_deliveries_total", outcome="success") == successes + 1)
        assert receiver.hits == 1
        assert sample("finetune_webhook_delivery_lag_seconds_count") == lags + 1
    finally:
        receiver.server.shutdown()


def test_provider_errors_are_counted_where_jobs_handle_them(settings, project, chat_jsonl, client):
    from service.db import session_scope
    from service.jobs import steps as jobs
    from service.jobs.models import Job
    from service.providers.base import ProviderError

    ds = client.post("/v1/datasets", files={"file": ("t.jsonl", chat_jsonl)}, headers=project["headers"]).json()
    transient = sample("finetune_provider_errors_total", provider="openai", kind="transient")
    permanent = sample("finetune_provider_errors_total", provider="openai", kind="permanent")
    with session_scope(settings) as s:
        job = Job(
            project_id=project["id"],
            provider="openai",
            base_model="gpt-4.1-mini-2025-04-14",
            method={"type": "supervised"},
            training_dataset_id=ds["id"],
            status="running",
        )
        s.add(job)
        s.flush()
        jobs._provider_failure(s, job, ProviderError("rate limited", transient=True, status_code=429), settings)
        jobs._provider_failure(s, job, ProviderError("bad model", transient=False, status_code=400), settings)
    assert sample("finetune_provider_errors_total", provider="openai", kind="transient") == transient + 1
    assert sample("finetune_provider_errors_total", provider="openai", kind="permanent") == permanent + 1
