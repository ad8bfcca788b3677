"""Provider webhooks through a live server: the emulator POSTs signed webhooks over HTTP to our running API.

With polls set far apart, a job reaches ``succeeded`` on the webhook, before its next poll is due; with webhooks
rejected (wrong secret), polling alone still finishes the job. Both the server-wide route and the per-project route
(secret stored with the project's OpenAI credentials) are exercised.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from helpers import wait_for
from service.webhooks.signing import generate_secret

# Every poll waits the longest allowed delay (FINETUNE_POLL_MAX_S, 300 s): only a webhook can finish a job quickly.
LONG_POLLS = {"FINETUNE_POLL_SCALE": "1000", "FINETUNE_POLL_MAX_S": "300"}


@dataclass
class Live:
    url: str
    client: httpx.Client
    emulator: Any
    project_id: str


@contextmanager
def _serve(app: Any, sock: socket.socket) -> Iterator[None]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the live API did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_stack(settings, worker, project, monkeypatch):  # type: ignore[no-untyped-def]
    """Builds (emulator, live API) pairs: ``live_stack(webhook_path=..., signing_secret=..., env=...)``."""
    from emulator import EmulatorConfig, JobTiming, OpenAIEmulator
    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    stack_cm: list[Any] = []

    def build(*, webhook_path: str, signing_secret: str, speed: float, env: dict[str, str]) -> Live:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        emu = OpenAIEmulator(
            EmulatorConfig(
                speed=speed,
                job_timing=JobTiming(validating_seconds=10, queued_seconds=10, step_seconds=2),
                webhook_url=url + webhook_path.format(project_id=project["id"]),
                webhook_secret=signing_secret,
            )
        ).start()
        stack_cm.append(emu)
        monkeypatch.setenv("FINETUNE_OPENAI_API_KEY", "sk-test-emulator")
        monkeypatch.setenv("FINETUNE_OPENAI_BASE_URL", emu.base_url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_settings_cache()
        serving = _serve(create_app(get_settings()), sock)
        serving.__enter__()
        stack_cm.append(serving)
        client = httpx.Client(base_url=url, headers=project["headers"], timeout=30)
        stack_cm.append(client)
        return Live(url=url, client=client, emulator=emu, project_id=project["id"])

    yield build
    for item in reversed(stack_cm):
        if hasattr(item, "stop"):
            item.stop()
        elif hasattr(item, "close"):
            item.close()
        else:
            item.__exit__(None, None, None)


def _start_job(live: Live, chat_jsonl: bytes) -> str:
    r = live.client.post("/v1/datasets", files={"file": ("train.jsonl", chat_jsonl)})
    assert r.status_code == 201 and r.json()["status"] == "ready", r.text
    r = live.client.post(
        "/v1/jobs", json={"training_dataset_id": r.json()["id"], "provider": "openai", "model": "gpt-4.1-mini"}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _job(live: Live, job_id: str) -> dict[str, Any]:
    r = live.client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _next_poll_at(job_id: str):  # type: ignore[no-untyped-def]
    from service.db import session_scope
    from service.jobs.models import Job

    with session_scope() as s:
        return s.get(Job, job_id).next_run_at


def _succeeded_at(job_id: str):  # type: ignore[no-untyped-def]
    from sqlmodel import select

    from service.db import session_scope
    from service.jobs.models import JobEvent

    with session_scope() as s:
        events = s.exec(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "status")).all()
        return next(e.created_at for e in events if e.data.get("to") == "succeeded")


def _finishes_on_the_webhook(live: Live, chat_jsonl: bytes) -> None:
    from service.clock import utcnow

    job_id = _start_job(live, chat_jsonl)
    # Submitted: the provider validates the files, and our next look is the long poll.
    wait_for(lambda: _job(live, job_id)["status"] == "validating_files", timeout=30)
    next_poll = _next_poll_at(job_id)
    assert (next_poll - utcnow()).total_seconds() > 200, next_poll
    retrieves_before = live.emulator.calls("GET /v1/fine_tuning/jobs/{job_id}")

    live.emulator.run_until_idle()  # the provider trains and finishes; its webhook goes out to our API

    done = wait_for(lambda: (j := _job(live, job_id))["status"] in ("succeeded", "failed") and j, timeout=30)
    assert done["status"] == "succeeded", done
    assert done["fine_tuned_model"] and done["trained_tokens"]
    assert _succeeded_at(job_id) < next_poll, "finished on the webhook, before the next poll was due"
    # One look at the provider on the webhook; no poll ran in between.
    assert live.emulator.calls("GET /v1/fine_tuning/jobs/{job_id}") == retrieves_before + 1
    deliveries = [m for m in live.emulator.state()["webhooks"] if m["event"]["type"] == "fine_tuning.job.succeeded"]
    assert [a["status"] for a in deliveries[0]["attempts"]] == [200]


def test_webhook_finishes_the_job_before_the_next_poll(live_stack, chat_jsonl):
    secret = generate_secret()
    live = live_stack(
        webhook_path="/v1/provider-webhooks/openai",
        signing_secret=secret,
        speed=0,
        env={**LONG_POLLS, "FINETUNE_OPENAI_WEBHOOK_SECRET": secret},
    )
    _finishes_on_the_webhook(live, chat_jsonl)


def test_project_webhook_secret_finishes_the_job(live_stack, chat_jsonl):
    secret = generate_secret()
    live = live_stack(
        webhook_path="/v1/provider-webhooks/openai/{project_id}", signing_secret=secret, speed=0, env=LONG_POLLS
    )
    r = live.client.put(
        "/v1/providers/openai/credentials",
        json={"api_key": "sk-project-key-0001", "base_url": live.emulator.base_url, "webhook_secret": secret},
    )
    assert r.status_code == 200, r.text
    assert r.json()["webhook_url_path"] == f"/v1/provider-webhooks/openai/{live.project_id}"
    _finishes_on_the_webhook(live, chat_jsonl)
    # No server-wide secret here: the old route is off, the project's route was the way in.
    assert httpx.post(f"{live.url}/v1/provider-webhooks/openai", content=b"{}").status_code == 503


def test_polling_alone_finishes_a_job_whose_webhooks_are_refused(live_stack, chat_jsonl):
    live = live_stack(
        webhook_path="/v1/provider-webhooks/openai",
        signing_secret=generate_secret(),  # not the secret our server checks against
        speed=200,
        env={"FINETUNE_OPENAI_WEBHOOK_SECRET": generate_secret()},
    )
    job_id = _start_job(live, chat_jsonl)
    done = wait_for(lambda: (j := _job(live, job_id))["status"] in ("succeeded", "failed") and j, timeout=60)
    assert done["status"] == "succeeded", done

    def refused():
        msgs = [m for m in live.emulator.state()["webhooks"] if m["event"]["type"] == "fine_tuning.job.succeeded"]
        return msgs and len(msgs[0]["attempts"]) == 3 and msgs[0]["attempts"]

    assert {a["status"] for a in wait_for(refused, timeout=10)} == {401}
