"""Work that cannot succeed ends instead of retrying forever: an evaluation whose endpoint answers 200 with a body that
is not JSON fails with a clear error after the bounded number of attempts (time travelled, not slept), and cancelling
one that is backing off ends it cancelled at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import wait_for

BOUND = 3


class _NotJson(BaseHTTPRequestHandler):
    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b"<html>upstream says hello</html>"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def not_json_server() -> Iterator[str]:
    _NotJson.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotJson)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def bounded(monkeypatch):  # type: ignore[no-untyped-def]
    from service.settings import reset_settings_cache

    monkeypatch.setenv("FINETUNE_MAX_STEP_ATTEMPTS", str(BOUND))
    reset_settings_cache()


def _evaluation(stack, base_url: str) -> str:  # type: ignore[no-untyped-def]
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"Question {i}: what is {i} plus {i}?"},
                {"role": "assistant", "content": f"{2 * i}"},
            ]
        }
        for i in range(12)
    ]
    test = stack.upload("".join(json.dumps(r) + "\n" for r in rows).encode(), "test.jsonl")
    body = {
        "dataset_id": test["id"],
        "candidates": [{"kind": "endpoint", "name": "odd", "model": "m", "base_url": base_url, "api_key": "sk-x"}],
    }
    r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_an_endpoint_answering_non_json_fails_the_evaluation_after_the_bound(stack, bounded, not_json_server):
    from service import clock

    evaluation_id = _evaluation(stack, not_json_server)
    path = f"/v1/evaluations/{evaluation_id}"
    seen = 0

    def next_attempt(after: int):  # type: ignore[no-untyped-def]
        return wait_for(lambda: (e := stack.get(path)) and (e["attempts"] > after or e["status"] == "failed") and e)

    while True:
        ev = next_attempt(seen)
        if ev["status"] == "failed":
            break
        seen = ev["attempts"]
        assert ev["status"] == "running" and ev["last_error"]["message"] and ev["last_error"]["at"]
        clock.travel(timedelta(hours=1))  # past any back-off: the sweeper sends it again
    assert ev["error"]["code"] == "step_failed", ev
    assert f"{BOUND} times in a row" in ev["error"]["message"]
    assert ev["attempts"] == BOUND and ev["last_error"]["message"] in ev["error"]["message"]
    assert "evaluation.failed" in [e["type"] for e in stack.get("/v1/events", limit=100)["data"]]
    requests = _NotJson.requests
    clock.travel(timedelta(hours=3))
    with pytest.raises(AssertionError):  # nothing more is tried
        wait_for(lambda: _NotJson.requests > requests, timeout=1.0)


def test_cancelling_a_backing_off_evaluation_ends_it_cancelled_promptly(stack, not_json_server):
    evaluation_id = _evaluation(stack, not_json_server)
    path = f"/v1/evaluations/{evaluation_id}"
    ev = wait_for(lambda: (e := stack.get(path)) and e["attempts"] >= 1 and e)
    assert ev["status"] == "running"  # backing off: the next try is seconds to minutes away

    r = stack.client.post(f"{path}/cancel", headers=stack.headers)
    assert r.status_code == 200 and r.json()["cancel_requested"]
    ev = wait_for(lambda: (e := stack.get(path))["status"] in ("cancelled", "failed", "succeeded") and e, timeout=10)
    assert ev["status"] == "cancelled", ev


def test_a_job_whose_provider_keeps_failing_shows_the_error_then_fails_after_the_bound(stack, bounded, chat_jsonl):
    emu = stack.emulator
    emu.add_fault(r"^POST /v1/files$", "503", probability=1.0, retry_after_seconds=None)
    ds = stack.upload(chat_jsonl)
    r = stack.client.post(
        "/v1/jobs",
        json={"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-4.1-mini"},
        headers=stack.headers,
    )
    assert r.status_code == 201, r.text
    path = f"/v1/jobs/{r.json()['id']}"

    # While it retries, the API says what goes wrong (not only "uploading files").
    retrying = wait_for(lambda: (j := stack.get(path)) and j["attempts"] >= 1 and j)
    assert retrying["last_error"]["message"] and retrying["last_error"]["at"]

    job = wait_for(lambda: (j := stack.get(path))["status"] in ("failed", "succeeded", "cancelled") and j)
    assert job["status"] == "failed" and job["error"]["code"] == "step_failed", job
    assert f"{BOUND} times in a row" in job["error"]["message"] and job["attempts"] == BOUND


def test_a_job_that_recovers_keeps_its_last_error_and_resets_its_count(stack, chat_jsonl):
    emu = stack.emulator
    emu.add_fault(r"^POST /v1/files$", "503", count=2, retry_after_seconds=None)
    ds = stack.upload(chat_jsonl)
    r = stack.client.post(
        "/v1/jobs",
        json={"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-4.1-mini"},
        headers=stack.headers,
    )
    assert r.status_code == 201, r.text
    job = wait_for(lambda: (j := stack.get(f"/v1/jobs/{r.json()['id']}"))["status"] == "succeeded" and j, timeout=120)
    assert job["attempts"] == 0 and job["last_error"] is not None and job["error"] is None


def test_cancelling_a_job_that_backs_off_for_an_hour_cancels_it_at_once(stack, chat_jsonl):
    stack.emulator.add_fault(r"^POST /v1/files$", "503", probability=1.0, retry_after_seconds=3600)
    ds = stack.upload(chat_jsonl)
    r = stack.client.post(
        "/v1/jobs",
        json={"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-4.1-mini"},
        headers=stack.headers,
    )
    assert r.status_code == 201, r.text
    path = f"/v1/jobs/{r.json()['id']}"
    job = wait_for(lambda: (j := stack.get(path)) and j["attempts"] >= 1 and j)
    assert job["status"] == "uploading"  # and not due again for an hour (the provider's retry-after)

    assert stack.client.post(f"{path}/cancel", headers=stack.headers).status_code == 200
    job = wait_for(lambda: (j := stack.get(path))["status"] in ("cancelled", "failed") and j, timeout=10)
    assert job["status"] == "cancelled", job
