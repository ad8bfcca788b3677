"""Outgoing webhooks end to end: registration, signed delivery, retries, 410, the delivery log, redelivery."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook

from helpers import wait_for


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"thanks")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def local_hooks(settings, monkeypatch):
    """Allow http and loopback receivers, as development setups do."""
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("FINETUNE_WEBHOOK_ALLOWLIST", '["127.0.0.1/32"]')
    reset_settings_cache()
    return get_settings()


@pytest.fixture
def hook_client(local_hooks, worker):
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    with TestClient(create_app(local_hooks), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.strict_outbound
def test_registration_refuses_internal_addresses(client, project):
    for url in (
        "https://127.0.0.1/x",
        "https://10.0.0.1/x",
        "https://169.254.169.254/latest",
        "https://[::1]/x",
        "https://2130706433/x",
        "http://example.com/x",
    ):
        r = client.post("/v1/webhook-endpoints", json={"url": url}, headers=project["headers"])
        assert r.status_code == 422 and r.json()["code"] == "url_not_allowed", (url, r.text)


def test_events_are_signed_retried_and_logged(hook_client, project, receiver, chat_jsonl):
    h = project["headers"]
    r = hook_client.post("/v1/webhook-endpoints", json={"url": receiver.url, "event_types": ["dataset.*"]}, headers=h)
    assert r.status_code == 201, r.text
    ep = r.json()
    assert ep["secret"].startswith("whsec_")
    receiver.status = 500
    hook_client.post("/v1/datasets", files={"file": ("d.jsonl", chat_jsonl)}, headers=h)
    wait_for(lambda: receiver.requests)
    headers, body = receiver.requests[0]
    event = Webhook(ep["secret"]).verify(body, headers)
    assert event["type"] == "dataset.ready" and event["data"]["object"]["object"] == "dataset"
    attempts = wait_for(
        lambda: hook_client.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries", headers=h).json()["data"]
    )
    assert attempts[0]["status_code"] == 500 and attempts[0]["response_excerpt"] == "thanks"

    # The retry is due 5 s later: travel there instead of sleeping; the same webhook-id comes again.
    from service import clock

    receiver.status = 200
    clock.travel(timedelta(seconds=6))
    wait_for(lambda: len(receiver.requests) >= 2)
    assert receiver.requests[1][0]["webhook-id"] == headers["webhook-id"]

    r = hook_client.post(f"/v1/events/{event['id']}/redeliver", headers=h)
    assert r.status_code == 202
    wait_for(lambda: len(receiver.requests) >= 3)
    assert receiver.requests[2][0]["webhook-id"] == headers["webhook-id"]


def test_gone_disables_the_endpoint(hook_client, project, receiver):
    h = project["headers"]
    ep = hook_client.post("/v1/webhook-endpoints", json={"url": receiver.url}, headers=h).json()
    receiver.status = 410
    assert hook_client.post(f"/v1/webhook-endpoints/{ep['id']}/test", headers=h).status_code == 202
    got = wait_for(
        lambda: (
            (e := hook_client.get(f"/v1/webhook-endpoints/{ep['id']}", headers=h).json())["status"] == "disabled" and e
        )
    )
    assert "410" in got["disabled_reason"]
    assert json.loads(receiver.requests[0][1])["type"] == "ping"


def test_rotation_signs_with_both_secrets(hook_client, project, receiver):
    h = project["headers"]
    ep = hook_client.post("/v1/webhook-endpoints", json={"url": receiver.url}, headers=h).json()
    new = hook_client.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", headers=h).json()
    assert new["secret"] != ep["secret"] and new["previous_secret_expires_at"]
    hook_client.post(f"/v1/webhook-endpoints/{ep['id']}/test", headers=h)
    wait_for(lambda: receiver.requests)
    headers, body = receiver.requests[0]
    Webhook(ep["secret"]).verify(body, headers)
    Webhook(new["secret"]).verify(body, headers)


def test_other_projects_cannot_see_endpoints(client, project, other_project, local_hooks):
    client.app.state.settings = local_hooks
    ep = client.post("/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=project["headers"]).json()
    for method, path in (
        ("get", f"/v1/webhook-endpoints/{ep['id']}"),
        ("patch", f"/v1/webhook-endpoints/{ep['id']}"),
        ("delete", f"/v1/webhook-endpoints/{ep['id']}"),
        ("get", f"/v1/webhook-endpoints/{ep['id']}/deliveries"),
        ("post", f"/v1/webhook-endpoints/{ep['id']}/test"),
        ("post", f"/v1/webhook-endpoints/{ep['id']}/rotate-secret"),
    ):
        kwargs = {"json": {}} if method == "patch" else {}
        r = getattr(client, method)(path, headers=other_project["headers"], **kwargs)
        assert r.status_code == 404, (method, path, r.status_code)


class HangingReceiver(Receiver):
    """Answers only once released, like a receiver stuck until our client gives up; counts requests in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        receiver = self
        handler = self.server.RequestHandlerClass

        class Hanging(handler):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                with receiver.lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                receiver.release.wait(120)
                with receiver.lock:
                    receiver.in_flight -= 1
                super().do_POST()

        self.server.RequestHandlerClass = Hanging

    def close(self) -> None:
        self.release.set()
        super().close()


def test_a_hanging_endpoint_does_not_hold_up_the_others(hook_client, project, receiver):
    """More deliveries to a hanging endpoint than the worker has threads: the other endpoint is still served."""
    h = project["headers"]
    hanging = HangingReceiver()
    try:
        slow = hook_client.post("/v1/webhook-endpoints", json={"url": hanging.url}, headers=h).json()
        fast = hook_client.post("/v1/webhook-endpoints", json={"url": receiver.url}, headers=h).json()
        slow_pings = [hook_client.post(f"/v1/webhook-endpoints/{slow['id']}/test", headers=h) for _ in range(8)]
        fast_pings = [hook_client.post(f"/v1/webhook-endpoints/{fast['id']}/test", headers=h) for _ in range(3)]
        assert {r.status_code for r in slow_pings + fast_pings} == {202}

        wait_for(lambda: len(receiver.requests) == 3)
        # Delivered while the hanging endpoint has not answered once (no attempt ended, not even by the client
        # timeout) and holds at most its two slots.
        assert hook_client.get(f"/v1/webhook-endpoints/{slow['id']}/deliveries", headers=h).json()["data"] == []
        assert 1 <= hanging.max_in_flight <= 2
        fast_log = hook_client.get(f"/v1/webhook-endpoints/{fast['id']}/deliveries", headers=h).json()["data"]
        assert [a["status_code"] for a in fast_log] == [200, 200, 200]

        hanging.release.set()
        wait_for(lambda: len(hanging.requests) == 8)
        ids = {headers["webhook-id"] for headers, _ in hanging.requests}
        assert ids == {r.json()["event_id"] for r in slow_pings}  # each once, none lost
        assert hanging.max_in_flight <= 2
    finally:
        hanging.close()
