"""OpenAI's webhooks to us: verified with the Standard Webhooks signature, and they make the job due at once."""

from __future__ import annotations

import json
import time

import pytest

from service.webhooks.signing import build_headers, generate_secret


@pytest.fixture
def hook_secret(settings, monkeypatch):
    from service.settings import reset_settings_cache

    secret = generate_secret()
    monkeypatch.setenv("FINETUNE_OPENAI_WEBHOOK_SECRET", secret)
    reset_settings_cache()
    return secret


def _post(client, secret, payload, msg_id="msg_1"):
    body = json.dumps(payload).encode()
    headers = build_headers(secret, msg_id, body)
    return client.post("/v1/provider-webhooks/openai", content=body, headers=headers)


def test_signature_is_required(settings, hook_secret):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings

    client = TestClient(create_app(get_settings()))
    payload = {"id": "evt_1", "type": "fine_tuning.job.succeeded", "created_at": int(time.time()), "data": {"id": "x"}}
    assert _post(client, generate_secret(), payload).status_code == 401
    r = client.post("/v1/provider-webhooks/openai", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 401
    r = _post(client, hook_secret, payload)
    assert r.status_code == 200 and r.json()["status"] == "ignored"


def test_webhook_makes_the_job_due(settings, hook_secret, project):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.clock import utcnow
    from service.datasets.models import Dataset
    from service.db import session_scope
    from service.jobs.models import Job
    from service.settings import get_settings

    with session_scope(settings) as s:
        ds = Dataset(project_id=project["id"], filename="x", status="ready", sha256="1" * 64, size_bytes=1)
        s.add(ds)
        s.flush()
        job = Job(
            project_id=project["id"],
            provider="openai",
            base_model="gpt-4.1-mini",
            training_dataset_id=ds.id,
            status="running",
            provider_job_id="ftjob-abc",
            next_run_at=None,
        )
        s.add(job)
    client = TestClient(create_app(get_settings()))
    payload = {
        "id": "evt_2",
        "type": "fine_tuning.job.succeeded",
        "created_at": int(time.time()),
        "data": {"id": "ftjob-abc"},
    }
    r = _post(client, hook_secret, payload)
    assert r.status_code == 200 and r.json() == {"status": "accepted", "job_id": job.id}
    with session_scope(settings) as s:
        due = s.get(Job, job.id).next_run_at
    assert due is not None and due <= utcnow()
