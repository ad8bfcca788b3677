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


# Per-project secrets -------------------------------------------------------------------------------------------------


def _running_job(settings, project_id: str, provider_job_id: str) -> str:
    from service.datasets.models import Dataset
    from service.db import session_scope
    from service.jobs.models import Job

    with session_scope(settings) as s:
        ds = Dataset(project_id=project_id, filename="x", status="ready", sha256="2" * 64, size_bytes=1)
        s.add(ds)
        s.flush()
        job = Job(
            project_id=project_id,
            provider="openai",
            base_model="gpt-4.1-mini",
            training_dataset_id=ds.id,
            status="running",
            provider_job_id=provider_job_id,
            next_run_at=None,
        )
        s.add(job)
    return job.id


def _succeeded(provider_job_id: str, event_id: str = "evt_p") -> dict:
    return {
        "id": event_id,
        "type": "fine_tuning.job.succeeded",
        "created_at": int(time.time()),
        "data": {"id": provider_job_id},
    }


def test_project_route_verifies_with_the_projects_own_secret(settings, hook_secret, project, other_project):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings

    client = TestClient(create_app(get_settings()))
    own = generate_secret()
    r = client.put(
        "/v1/providers/openai/credentials",
        json={"api_key": "sk-project-key-0001", "webhook_secret": own},
        headers=project["headers"],
    )
    assert r.status_code == 200 and r.json()["webhook_secret_set"] is True, r.text
    mine = _running_job(settings, project["id"], "ftjob-mine")
    theirs = _running_job(settings, other_project["id"], "ftjob-theirs")
    path = f"/v1/provider-webhooks/openai/{project['id']}"

    def post(secret, payload, msg_id="msg_p1"):
        body = json.dumps(payload).encode()
        return client.post(path, content=body, headers=build_headers(secret, msg_id, body))

    # The project's secret wins over the server-wide one on the project's route.
    assert post(hook_secret, _succeeded("ftjob-mine")).status_code == 401
    assert post(generate_secret(), _succeeded("ftjob-mine")).status_code == 401
    r = post(own, _succeeded("ftjob-mine"))
    assert r.status_code == 200 and r.json() == {"status": "accepted", "job_id": mine}
    # A project's secret cannot wake another project's job, even knowing its provider id.
    r = post(own, _succeeded("ftjob-theirs"), "msg_p2")
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    from service.db import session_scope
    from service.jobs.models import Job

    with session_scope(settings) as s:
        assert s.get(Job, theirs).next_run_at is None
    # The old route keeps working with the server-wide secret, for every project.
    assert _post(client, hook_secret, _succeeded("ftjob-theirs"), "msg_p3").json() == {
        "status": "accepted",
        "job_id": theirs,
    }


def test_project_route_without_any_secret_is_off(settings, project):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings

    client = TestClient(create_app(get_settings()))
    body = json.dumps(_succeeded("x")).encode()
    for who in (project["id"], "proj_unknown"):
        r = client.post(
            f"/v1/provider-webhooks/openai/{who}", content=body, headers=build_headers(generate_secret(), "m", body)
        )
        assert r.status_code == 503 and r.json()["code"] == "webhooks_off"


def test_webhook_secret_is_stored_encrypted_and_kept_or_removed(settings, project):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.db import session_scope
    from service.providers import registry
    from service.providers.models import ProviderCredential
    from service.secrets import encrypt_secret
    from service.settings import get_settings

    client = TestClient(create_app(get_settings()))
    url = "/v1/providers/openai/credentials"
    secret = generate_secret()

    def stored():
        with session_scope(settings) as s:
            cred = registry.credential_for(s, project["id"], "openai")
            return cred.secret_ciphertext, registry.decode_credential(settings, cred)

    assert (
        client.put(url, json={"api_key": "sk-a-0001", "webhook_secret": "nope"}, headers=project["headers"]).status_code
        == 422
    )
    assert (
        client.put(url, json={"api_key": "sk-a-0001", "webhook_secret": secret}, headers=project["headers"]).status_code
        == 200
    )
    blob, plain = stored()
    assert secret not in blob and "sk-a-0001" not in blob
    assert (plain.api_key, plain.webhook_secret) == ("sk-a-0001", secret)
    # A new key without webhook_secret keeps the stored secret; an explicit null removes it.
    r = client.put(url, json={"api_key": "sk-b-0002"}, headers=project["headers"])
    assert r.json()["webhook_secret_set"] is True
    assert stored()[1].webhook_secret == secret and stored()[1].api_key == "sk-b-0002"
    r = client.put(url, json={"api_key": "sk-b-0002", "webhook_secret": None}, headers=project["headers"])
    assert r.json()["webhook_secret_set"] is False and stored()[1].webhook_secret is None

    # Rows written before webhook secrets existed hold the bare key and still work.
    with session_scope(settings) as s:
        cred = s.get(ProviderCredential, registry.credential_for(s, project["id"], "openai").id)
        cred.secret_ciphertext = encrypt_secret(settings, "sk-legacy-0003")
    assert stored()[1] == registry.CredentialSecrets(api_key="sk-legacy-0003", webhook_secret=None)
