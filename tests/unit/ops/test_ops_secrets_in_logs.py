"""Secrets never reach a log record or an error body.

Records are captured raw, at DEBUG, before any handler's redaction: nothing may log a secret in the first place.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
from collections.abc import Iterator

import pytest


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> Iterator[str]:
        for r in self.records:
            try:
                yield r.getMessage()
            except (TypeError, ValueError):
                yield f"{r.msg} {r.args!r}"
            yield repr(r.args)
            if r.exc_info:
                yield logging.Formatter().formatException(r.exc_info)
            if r.exc_text:
                yield r.exc_text
            yield repr({k: v for k, v in r.__dict__.items() if k not in ("msg", "args", "exc_info", "exc_text")})


@pytest.fixture
def captured() -> Iterator[Capture]:
    root = logging.getLogger()
    handler, level = Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_secrets_absent_from_logs_and_error_bodies(client, project, captured):
    headers = project["headers"]
    secrets: list[str] = [project["key"]]
    error_bodies: list[str] = []

    def call(method: str, url: str, **kwargs):  # type: ignore[no-untyped-def]
        r = client.request(method, url, **kwargs)
        if r.status_code >= 400:
            error_bodies.append(f"{method} {url} -> {r.status_code} {r.text}")
        return r

    # An API key.
    r = call("POST", "/v1/project/api-keys", json={"name": "ci"}, headers=headers)
    assert r.status_code == 201, r.text
    new_key, new_key_id = r.json()["key"], r.json()["id"]
    secrets.append(new_key)

    # Provider credentials, and a refused update whose bad webhook secret carries the key along.
    openai_key = "sk-proj-" + pysecrets.token_urlsafe(32)
    openai_whsec = "whsec_" + pysecrets.token_urlsafe(24)
    secrets += [openai_key]
    r = call("PUT", "/v1/providers/openai/credentials", json={"api_key": openai_key}, headers=headers)
    assert r.status_code == 200, r.text
    bad_whsec = "whsec_!" + openai_key
    r = call(
        "PUT",
        "/v1/providers/openai/credentials",
        json={"api_key": openai_key, "webhook_secret": bad_whsec},
        headers=headers,
    )
    assert r.status_code == 422, r.text
    secrets.append(bad_whsec)
    r = call("PUT", "/v1/providers/openai/credentials", json={"api_key": openai_key, "webhook_secret": openai_whsec})
    assert r.status_code == 401
    secrets.append(openai_whsec)

    # A webhook endpoint's signing secret, and the one its rotation makes.
    r = call("POST", "/v1/webhook-endpoints", json={"url": "https://example.com/hook"}, headers=headers)
    assert r.status_code == 201, r.text
    endpoint_id = r.json()["id"]
    secrets.append(r.json()["secret"])
    r = call("POST", f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers=headers)
    assert r.status_code == 200, r.text
    secrets.append(r.json()["secret"])

    # Requests with bad keys: one character off, a revoked key, a key in the wrong scheme, a wrong admin key.
    off_by_one = new_key[:-1] + ("A" if new_key[-1] != "A" else "B")
    secrets.append(off_by_one)
    assert call("GET", "/v1/project", headers={"Authorization": f"Bearer {off_by_one}"}).status_code == 401
    assert call("DELETE", f"/v1/project/api-keys/{new_key_id}", headers=headers).status_code == 200
    assert call("GET", "/v1/project", headers={"Authorization": f"Bearer {new_key}"}).status_code == 401
    assert call("GET", "/v1/project", headers={"Authorization": f"Basic {new_key}"}).status_code == 401
    assert call("GET", "/metrics", headers={"Authorization": f"Bearer {new_key}"}).status_code in (401, 403)
    assert call(
        "POST", "/v1/projects", json={"name": "x"}, headers={"Authorization": f"Bearer {new_key}"}
    ).status_code in (
        401,
        403,
    )

    assert captured.records, "no log records were captured: the capture is broken"
    # The request log saw every call above: the capture sees the service's loggers.
    assert any(r.name == "service.http" for r in captured.records)
    assert len(error_bodies) >= 6, error_bodies
    # Each secret whole, and its random part alone (a log that cut the prefix would still leak it).
    needles = {s for s in secrets} | {s.split("_", 1)[-1] for s in secrets if "_" in s[:8]}
    needles = {n for n in needles if len(n) >= 16}
    texts = list(captured.texts())
    for needle in needles:
        leaked_logs = [t for t in texts if needle in t]
        assert not leaked_logs, f"a secret ({needle[:6]}...) is in a log record: {leaked_logs[0][:300]}"
        leaked_bodies = [b for b in error_bodies if needle in b]
        assert not leaked_bodies, f"a secret ({needle[:6]}...) is in an error body: {leaked_bodies[0][:300]}"
