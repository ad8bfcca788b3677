"""Request body limit: 413 problem before the body is read whole; dataset uploads keep their own limit."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.api.bodylimit import BodyLimitMiddleware


@pytest.fixture
def small_limit(settings, monkeypatch):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_MAX_BODY_BYTES", "1024")
    reset_settings_cache()
    with TestClient(create_app(get_settings()), raise_server_exceptions=False) as c:
        yield c


def _assert_413(r) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "payload_too_large" and body["max_bytes"] == 1024 and body["status"] == 413


def test_declared_length_over_the_limit_is_refused(small_limit, project):
    body = json.dumps({"url": "https://example.com/" + "a" * 2000}).encode()
    r = small_limit.post(
        "/v1/webhook-endpoints", content=body, headers={**project["headers"], "content-type": "application/json"}
    )
    _assert_413(r)


def test_streamed_body_without_length_is_counted(small_limit, project):
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"url": "https://example.com/'
        for _ in range(10):
            yield b"a" * 200
        yield b'"}'

    r = small_limit.post(
        "/v1/webhook-endpoints", content=chunks(), headers={**project["headers"], "content-type": "application/json"}
    )
    _assert_413(r)


def test_bodies_under_the_limit_pass(small_limit, project):
    r = small_limit.post("/v1/webhook-endpoints", json={"url": "https://example.com/hook"}, headers=project["headers"])
    assert r.status_code == 201, r.text


def test_dataset_uploads_keep_their_own_limit(small_limit, project, chat_jsonl):
    assert len(chat_jsonl) > 1024
    r = small_limit.post("/v1/datasets", files={"file": ("train.jsonl", chat_jsonl)}, headers=project["headers"])
    assert r.status_code in (200, 201), r.text
    # JSON to a dataset route is a JSON body like any other.
    r = small_limit.post(
        "/v1/datasets/leakage",
        content=b'{"x": "' + b"a" * 2000 + b'"}',
        headers={**project["headers"], "content-type": "application/json"},
    )
    _assert_413(r)


def test_nothing_is_read_when_the_declared_length_is_too_large():
    """The app never runs and ``receive`` is never called: the 413 goes out before the body is touched."""
    called = {"app": False, "receive": 0}

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        called["app"] = True

    async def receive():  # type: ignore[no-untyped-def]
        called["receive"] += 1
        return {"type": "http.request", "body": b"x" * 10, "more_body": True}

    sent: list[dict] = []

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/jobs",
        "raw_path": b"/v1/jobs",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("test", 80),
        "headers": [(b"content-length", b"999999999"), (b"content-type", b"application/json")],
    }
    asyncio.run(BodyLimitMiddleware(app, max_bytes=1024)(scope, receive, send))
    assert not called["app"] and called["receive"] == 0
    assert sent[0]["status"] == 413
    headers = dict(sent[0]["headers"])
    assert headers[b"connection"] == b"close"


def test_stream_is_cut_at_the_limit_not_read_to_the_end():
    """Without a length, reading stops at the first chunk past the limit."""
    reads = 0

    async def receive():  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 512, "more_body": True}  # an endless body

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        while True:
            await receive()

    sent: list[dict] = []

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/jobs",
        "raw_path": b"/v1/jobs",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("test", 80),
        "headers": [(b"transfer-encoding", b"chunked")],
    }
    asyncio.run(BodyLimitMiddleware(app, max_bytes=1024)(scope, receive, send))
    assert reads == 3  # 512, 1024, 1536 > limit
    assert sent[0]["status"] == 413


def test_413_is_documented_on_operations_with_a_body(app):
    spec = app.openapi()
    post = spec["paths"]["/v1/webhook-endpoints"]["post"]
    assert "413" in post["responses"]
    assert "413" not in spec["paths"]["/v1/webhook-endpoints"]["get"]["responses"]
