"""Every route that takes a URL, against every way of reaching the inside of the network (issue 12's SSRF table).

The production policy (``strict_outbound``: no allowlist) with plain http allowed, so that only the address decides.
A loopback model server stands where an attacker would aim; whatever the route, it must see no connection at all.
Literal addresses and names that resolve inward are refused when the URL is given (422 ``url_not_allowed`` naming
the field); a name that answers a public address at that check and loopback later (DNS rebinding) is refused at
connect time: the evaluation fails naming the candidate, the delivery records the refusal. DNS is a stand-in
(``service.net.resolve.system_resolver`` replaced process-wide, so the API and the in-process worker both use it).
With the loopback allowlist of the test settings, an evaluation against the same server works.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from helpers import static_resolver, wait_for

BASE = "gpt-4.1-mini-2025-04-14"
PUBLIC = "93.184.216.34"  # what the stand-in DNS answers for public names; never actually dialled here


class ModelServer:
    """An OpenAI-compatible chat server on loopback that counts every connection it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.paths.append(self.path)
                req = json.loads(body or b"{}")
                answer = {
                    "id": "chatcmpl-internal",
                    "object": "chat.completion",
                    "created": 0,
                    "model": req.get("model", "m"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "INTERNAL SECRET billing"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def process_request(self, request: Any, client_address: Any) -> None:
                outer.connections += 1
                super().process_request(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    server = ModelServer()
    yield server
    server.close()


@dataclass(frozen=True)
class Case:
    label: str
    url: str
    refused_at: str  # "create": 422 url_not_allowed; "connect": accepted, then refused when dialled


def cases(port: int, tag: str) -> list[Case]:
    """The table, for one route (``tag`` keeps each route's DNS names, and so their lookup counts, apart)."""
    return [
        Case("127.0.0.1", f"http://127.0.0.1:{port}/v1", "create"),
        Case("localhost", f"http://localhost:{port}/v1", "create"),
        Case("[::1]", f"http://[::1]:{port}/v1", "create"),
        Case("10.0.0.1", f"http://10.0.0.1:{port}/v1", "create"),
        Case("169.254.169.254", "http://169.254.169.254/latest/meta-data", "create"),
        Case("0x7f000001", f"http://0x7f000001:{port}/v1", "create"),
        Case("2130706433", f"http://2130706433:{port}/v1", "create"),
        Case("[::ffff:127.0.0.1]", f"http://[::ffff:127.0.0.1]:{port}/v1", "create"),
        Case("name resolving to loopback", f"http://loopback-{tag}.test:{port}/v1", "create"),
        Case("DNS rebinding", f"http://rebind-{tag}.test:{port}/v1", "connect"),
    ]


TAGS = ("webhook", "candidate", "judge", "credentials")


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand-in DNS: ``loopback-*`` names answer 127.0.0.1; ``rebind-*`` names a public address once, then loopback;
    ``*.public.test`` a public address. Returns the names looked up, in order."""
    from service.net import resolve

    mapping: dict[str, Any] = {"hooks.public.test": [PUBLIC]}
    for tag in TAGS:
        mapping[f"loopback-{tag}.test"] = ["127.0.0.1"]
        mapping[f"rebind-{tag}.test"] = [[PUBLIC], ["127.0.0.1"]]
    calls: list[str] = []
    monkeypatch.setattr(resolve, "system_resolver", static_resolver(mapping, calls))
    return calls


@dataclass
class Guarded:
    client: Any
    headers: dict[str, str]
    emulator: Any

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body, headers=self.headers)

    def get(self, path: str) -> dict[str, Any]:
        r = self.client.get(path, headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def guarded(settings, worker, project, emulator, dns, monkeypatch) -> Iterator[Guarded]:  # type: ignore[no-untyped-def]
    """The service in-process under the production policy (plain http allowed), its OpenAI the emulator: an
    operator-configured URL, trusted as such."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_OUTBOUND_ALLOW_HTTP", "true")
    monkeypatch.setenv("FINETUNE_OPENAI_API_KEY", "sk-test-emulator")
    monkeypatch.setenv("FINETUNE_OPENAI_BASE_URL", emulator.base_url)
    reset_settings_cache()
    assert get_settings().outbound_allowlist == []
    with TestClient(create_app(get_settings()), raise_server_exceptions=False) as client:
        yield Guarded(client, project["headers"], emulator)


def _refused_at_creation(r: Any, field: str, case: Case) -> None:
    assert r.status_code == 422, (case.label, r.status_code, r.text)
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "url_not_allowed", (case.label, problem)
    assert problem["errors"][0]["field"] == field and field in problem["detail"], (case.label, problem)


def _dataset(g: Guarded, chat_jsonl: bytes) -> str:
    r = g.client.post("/v1/datasets", files={"file": ("test.jsonl", chat_jsonl)}, headers=g.headers)
    assert r.status_code in (200, 201), r.text
    return wait_for(lambda: (d := g.get(f"/v1/datasets/{r.json()['id']}"))["status"] == "ready" and d)["id"]


def _finished(g: Guarded, evaluation_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (e := g.get(f"/v1/evaluations/{evaluation_id}"))["status"] in ("succeeded", "failed") and e,
        timeout=60,
    )


@pytest.mark.strict_outbound
def test_webhook_endpoints(guarded, model_server, dns):  # type: ignore[no-untyped-def]
    g = guarded
    ok = g.post("/v1/webhook-endpoints", {"url": "http://hooks.public.test/x"})
    assert ok.status_code == 201, ok.text
    rebinding = None
    for case in cases(model_server.port, "webhook"):
        r = g.post("/v1/webhook-endpoints", {"url": case.url})
        if case.refused_at == "create":
            _refused_at_creation(r, "url", case)
            patch = g.client.patch(f"/v1/webhook-endpoints/{ok.json()['id']}", json={"url": case.url}, headers=g.headers)
            _refused_at_creation(patch, "url", case)
        else:
            assert r.status_code == 201, (case.label, r.text)
            rebinding = r.json()
    assert rebinding is not None
    assert g.get(f"/v1/webhook-endpoints/{ok.json()['id']}")["url"] == "http://hooks.public.test/x"

    # Rebinding: registration saw the public address; the delivery resolves again, sees loopback and sends nothing.
    assert g.client.post(f"/v1/webhook-endpoints/{rebinding['id']}/test", headers=g.headers).status_code == 202
    attempts = wait_for(lambda: g.get(f"/v1/webhook-endpoints/{rebinding['id']}/deliveries")["data"])
    assert attempts[0]["details"]["disposition"] == "refused", attempts[0]
    assert attempts[0]["error"] == "refused: loopback address 127.0.0.1 (resolved from rebind-webhook.test)"
    assert attempts[0]["status_code"] is None
    assert dns.count("rebind-webhook.test") >= 2
    assert model_server.connections == 0


@pytest.mark.strict_outbound
def test_evaluation_endpoint_candidates(guarded, model_server, chat_jsonl):  # type: ignore[no-untyped-def]
    g = guarded
    dataset_id = _dataset(g, chat_jsonl)
    rebinding = None
    for case in cases(model_server.port, "candidate"):
        body = {
            "dataset_id": dataset_id,
            "candidates": [
                {"kind": "model", "name": "base", "model": BASE},
                {"kind": "endpoint", "name": "internal", "model": "m", "base_url": case.url, "api_key": "sk-x"},
            ],
        }
        r = g.post("/v1/evaluations", body)
        if case.refused_at == "create":
            _refused_at_creation(r, "candidates.1.base_url", case)
        else:
            assert r.status_code == 201, (case.label, r.text)
            rebinding = r.json()
    assert rebinding is not None

    ev = _finished(g, rebinding["id"])
    assert ev["status"] == "failed", ev
    assert ev["error"]["candidate"] == "internal" and ev["error"]["code"] == "url_not_allowed", ev["error"]
    assert "refused" in ev["error"]["message"] and "127.0.0.1" in ev["error"]["message"], ev["error"]
    samples = json.dumps(g.get(f"/v1/evaluations/{ev['id']}/samples"))
    assert "INTERNAL SECRET" not in samples and "INTERNAL SECRET" not in json.dumps(ev)
    assert model_server.connections == 0


@pytest.mark.strict_outbound
def test_judge_endpoints(guarded, model_server, chat_jsonl):  # type: ignore[no-untyped-def]
    g = guarded
    dataset_id = _dataset(g, chat_jsonl)
    rebinding = None
    for case in cases(model_server.port, "judge"):
        body = {
            "dataset_id": dataset_id,
            "candidates": [{"kind": "model", "name": "base", "model": BASE}],
            "graders": [{"type": "llm_rubric", "name": "rubric", "model": "judge-model", "rubric": "Right label?"}],
            "judge": {"base_url": case.url, "api_key": "sk-judge"},
        }
        r = g.post("/v1/evaluations", body)
        if case.refused_at == "create":
            _refused_at_creation(r, "judge.base_url", case)
        else:
            assert r.status_code == 201, (case.label, r.text)
            rebinding = r.json()
    assert rebinding is not None

    ev = _finished(g, rebinding["id"])
    assert "INTERNAL SECRET" not in json.dumps(ev)
    assert ev["status"] == "failed", ev
    assert "refused" in json.dumps(ev["error"]), ev["error"]
    assert model_server.connections == 0


@pytest.mark.strict_outbound
def test_provider_credentials(guarded, model_server, chat_jsonl):  # type: ignore[no-untyped-def]
    g = guarded
    rebinding = None
    for case in cases(model_server.port, "credentials"):
        r = g.client.put(
            "/v1/providers/openai/credentials", json={"api_key": "sk-project-key", "base_url": case.url}, headers=g.headers
        )
        if case.refused_at == "create":
            _refused_at_creation(r, "base_url", case)
        else:
            assert r.status_code == 200, (case.label, r.text)
            rebinding = r.json()
    assert rebinding is not None and rebinding["base_url"].startswith("http://rebind-credentials.test")

    # The project's OpenAI now points at the rebinding name: an evaluation of an OpenAI model dials it and fails.
    dataset_id = _dataset(g, chat_jsonl)
    r = g.post("/v1/evaluations", {"dataset_id": dataset_id, "candidates": [{"kind": "model", "name": "m", "model": BASE}]})
    assert r.status_code == 201, r.text
    ev = _finished(g, r.json()["id"])
    assert ev["status"] == "failed" and ev["error"]["candidate"] == "m", ev
    assert "refused" in ev["error"]["message"], ev["error"]
    r = g.post(
        "/v1/evaluations",
        {"dataset_id": dataset_id, "mode": "batch", "candidates": [{"kind": "model", "name": "b", "model": BASE}]},
    )
    assert r.status_code == 201, r.text
    ev = _finished(g, r.json()["id"])
    assert ev["status"] == "failed" and ev["error"]["candidate"] == "b", ev  # through the Batch API: the same
    assert "loopback address 127.0.0.1 (resolved from rebind-credentials.test)" in ev["error"]["message"]
    assert ev["error"]["code"] == "url_not_allowed", ev["error"]  # the code realtime and the API give a refused URL
    # A training job on that account fails at its first provider call, once, instead of retrying the refusal.
    r = g.post("/v1/jobs", {"training_dataset_id": dataset_id, "provider": "openai", "model": BASE})
    assert r.status_code == 201, r.text
    job = wait_for(lambda: (j := g.get(f"/v1/jobs/{r.json()['id']}"))["status"] in ("failed", "succeeded") and j)
    assert job["status"] == "failed" and job["error"]["code"] == "url_not_allowed", job
    assert "loopback address 127.0.0.1 (resolved from rebind-credentials.test)" in job["error"]["message"]
    assert job["attempts"] == 0, "not retried: the same refusal would come again"
    assert model_server.connections == 0

    # The operator's own base URL (FINETUNE_OPENAI_BASE_URL, a loopback emulator here) is trusted without a listing.
    r = g.client.put(
        "/v1/providers/openai/credentials",
        json={"api_key": "sk-project-key", "base_url": g.emulator.base_url},
        headers=g.headers,
    )
    assert r.status_code == 200, r.text


def test_allowlisted_loopback_model_server_works(settings, worker, project, model_server, chat_jsonl):  # type: ignore[no-untyped-def]
    """The test settings allowlist loopback, as an operator would list a model server on the private network."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    assert "127.0.0.1/32" in settings.outbound_allowlist
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        g = Guarded(client, project["headers"], None)
        dataset_id = _dataset(g, chat_jsonl)
        base_url = f"http://127.0.0.1:{model_server.port}/v1"
        body = {
            "dataset_id": dataset_id,
            "candidates": [{"kind": "endpoint", "name": "private", "model": "m", "base_url": base_url}],
        }
        r = g.post("/v1/evaluations", body)
        assert r.status_code == 201, r.text
        ev = _finished(g, r.json()["id"])
    assert ev["status"] == "succeeded", ev
    assert ev["results"]["candidates"][0]["n"] == 12
    assert model_server.paths.count("/v1/chat/completions") == 12
