"""Every response carries the request id, an unexpected error included, and its log line has it too."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient


def test_unexpected_errors_are_problems_with_the_request_id(app, caplog):
    def boom() -> None:
        raise RuntimeError("something broke")

    app.add_api_route("/v1/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        r = client.get("/v1/boom", headers={"x-request-id": "rid-123"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-request-id"] == "rid-123"
    body = r.json()
    assert body["code"] == "internal_error" and body["request_id"] == "rid-123"
    assert "something broke" not in r.text  # the cause is logged, never returned
    errors = [rec for rec in caplog.records if rec.getMessage() == "unhandled error"]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_request_id_is_made_when_not_given(client):
    r = client.get("/healthz")
    assert len(r.headers["x-request-id"]) == 32
    assert client.get("/healthz", headers={"x-request-id": "x" * 100}).headers["x-request-id"] == "x" * 64
