"""Health, auth and project isolation, problem+json errors, pagination, idempotency."""

from __future__ import annotations


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_reports_database_down(client, settings, monkeypatch):
    import service.api.health as health

    def broken(_settings=None):
        raise ConnectionError("down")

    monkeypatch.setattr(health, "ping", broken)
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"].startswith("error")


def test_requests_need_a_valid_key(client):
    r = client.get("/v1/datasets")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "missing_api_key" and body["status"] == 401 and body["instance"] == "/v1/datasets"
    r = client.get("/v1/datasets", headers={"Authorization": "Bearer ftk_nope"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    r = client.get("/v1/datasets", headers={"Authorization": "Basic abc"})
    assert r.json()["code"] == "invalid_authorization"


def test_key_is_stored_hashed_and_revocable(client, project, settings):
    from sqlmodel import select

    from service.db import session_scope
    from service.projects.models import ApiKey

    with session_scope(settings) as s:
        stored = s.exec(select(ApiKey)).all()
    assert all(project["key"] not in k.key_hash for k in stored)
    r = client.get("/v1/project", headers=project["headers"])
    assert r.status_code == 200 and r.json()["id"] == project["id"]
    keys = client.get("/v1/project/api-keys", headers=project["headers"]).json()
    assert keys[0]["last_used_at"] is not None
    new = client.post("/v1/project/api-keys", json={"name": "ci"}, headers=project["headers"]).json()
    assert new["key"].startswith("ftk_")
    r = client.delete(f"/v1/project/api-keys/{keys[0]['id']}", headers=project["headers"])
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert client.get("/v1/project", headers=project["headers"]).status_code == 401
    assert client.get("/v1/project", headers={"Authorization": f"Bearer {new['key']}"}).status_code == 200


def test_admin_project_creation(client, settings, monkeypatch):
    r = client.post("/v1/projects", json={"name": "x"}, headers={"Authorization": "Bearer whatever"})
    assert r.status_code == 403 and r.json()["code"] == "admin_disabled"
    client.app.state.settings = settings.model_copy(update={"admin_key": __import__("pydantic").SecretStr("adm")})
    r = client.post("/v1/projects", json={"name": "x"}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = client.post("/v1/projects", json={"name": "x"}, headers={"Authorization": "Bearer adm"})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]["key"]
    assert client.get("/v1/project", headers={"Authorization": f"Bearer {key}"}).json()["name"] == "x"


def test_validation_errors_are_problems(client, project):
    r = client.post("/v1/jobs", json={"model": ""}, headers=project["headers"])
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    fields = {e["field"] for e in body["errors"]}
    assert "training_dataset_id" in fields and "model" in fields


def test_unknown_route_is_a_problem(client):
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_request_id_is_echoed(client):
    r = client.get("/healthz", headers={"x-request-id": "abc123"})
    assert r.headers["x-request-id"] == "abc123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def _upload(client, headers, content: bytes, name: str = "d.jsonl", **fields):
    return client.post("/v1/datasets", files={"file": (name, content)}, data=fields, headers=headers)


def test_pagination_newest_first_with_cursor(client, project, chat_jsonl):
    ids = []
    for i in range(5):
        r = _upload(
            client,
            project["headers"],
            chat_jsonl
            + f'{{"messages": [{{"role": "user", "content": "{i}"}}, {{"role": "assistant", "content": "x"}}]}}\n'.encode(),
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    seen = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"after": cursor} if cursor else {})
        page = client.get("/v1/datasets", params=params, headers=project["headers"]).json()
        seen += [d["id"] for d in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids))


def test_projects_are_isolated(client, project, other_project, chat_jsonl):
    ds = _upload(client, project["headers"], chat_jsonl).json()
    assert client.get(f"/v1/datasets/{ds['id']}", headers=other_project["headers"]).status_code == 404
    assert client.get(f"/v1/datasets/{ds['id']}/report", headers=other_project["headers"]).status_code == 404
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=other_project["headers"]).status_code == 404
    assert client.get("/v1/datasets", headers=other_project["headers"]).json()["data"] == []
    # The same content in another project is that project's own dataset.
    other = _upload(client, other_project["headers"], chat_jsonl).json()
    assert other["id"] != ds["id"]


def test_idempotency_key_replays_and_refuses_reuse(client, project, chat_jsonl):
    h = project["headers"] | {"Idempotency-Key": "k1"}
    a = _upload(client, h, chat_jsonl)
    b = _upload(client, h, chat_jsonl)
    assert a.status_code == b.status_code == 201
    assert a.json() == b.json()
    c = _upload(client, h, chat_jsonl + b"\n")
    assert c.status_code == 409 and c.json()["code"] == "idempotency_key_reused"


def test_identical_upload_returns_existing_dataset(client, project, chat_jsonl):
    a = _upload(client, project["headers"], chat_jsonl)
    b = _upload(client, project["headers"], chat_jsonl, name="again.jsonl")
    assert a.status_code == 201 and b.status_code == 200
    assert a.json()["id"] == b.json()["id"]


def test_idempotent_answers_are_stored_sealed(client, project, settings):
    """A webhook endpoint's secret is shown once; its replayable answer must not sit in the database in clear."""
    from sqlmodel import select

    from service.db import session_scope
    from service.idempotency.models import IdempotencyRecord

    headers = {**project["headers"], "Idempotency-Key": "whep-1"}
    body = {"url": "https://hooks.example.com/x"}
    first = client.post("/v1/webhook-endpoints", json=body, headers=headers)
    assert first.status_code == 201, first.text
    secret = first.json()["secret"]
    again = client.post("/v1/webhook-endpoints", json=body, headers=headers)
    assert again.json() == first.json()
    with session_scope(settings) as s:
        stored = s.exec(select(IdempotencyRecord)).all()
    assert stored and all(secret not in str(r.response) for r in stored)


def test_nul_characters_are_client_errors_not_500s(client, project, chat_jsonl):
    """PostgreSQL refuses NUL in text and JSON; such input is the client's problem on every database."""
    h = project["headers"]
    assert client.get("/v1/jobs", params={"after": "job_\x00x"}, headers=h).status_code == 422
    r = client.get("/v1/jobs", params={"provider": "open\x00ai"}, headers=h)
    assert r.status_code in (200, 422), r.text  # SQLite compares it; PostgreSQL refuses it
    ds = client.post("/v1/datasets", files={"file": ("t.jsonl", chat_jsonl)}, headers=h).json()
    body = {"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-4.1-mini-2025-04-14"}
    r = client.post("/v1/jobs", json=body | {"metadata": {"team": "a\x00b"}}, headers=h)
    assert r.status_code in (201, 422), r.text
    if r.status_code == 422:
        assert r.json()["code"] == "unstorable_value"
