from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from emulator import EmulatorConfig, OpenAIEmulator
from emulator.samples import training_jsonl
from emulator.webhooks import new_secret

SECRET = new_secret()


class Receiver:
    """A real HTTP endpoint that records deliveries and answers with the queued status codes (then 200)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                with receiver.arrived:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.arrived.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"expected {count} deliveries, got {len(self.received)}"
                self.arrived.wait(left)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _finish_a_job(emu: OpenAIEmulator, client: openai.OpenAI, **kw: object) -> str:
    upload = client.files.create(file=("t.jsonl", training_jsonl(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload.id, **kw)
    emu.run_until_idle()
    return job.id


def test_drained_webhooks_verify_with_standardwebhooks_and_the_sdk(sdk: Callable[..., openai.OpenAI]) -> None:
    with OpenAIEmulator(config=EmulatorConfig(speed=0, webhook_secret=SECRET)) as emu:
        client = sdk(emu.base_url, webhook_secret=SECRET)
        job_id = _finish_a_job(emu, client)
        (message,) = emu.drain_webhooks()
        assert emu.drain_webhooks() == []  # drained once

        payload = Webhook(SECRET).verify(message.body, message.headers)
        assert payload["type"] == "fine_tuning.job.succeeded"
        assert payload["data"] == {"id": job_id}
        assert payload["id"].startswith("evt_")
        assert payload["created_at"] == client.fine_tuning.jobs.retrieve(job_id).finished_at

        event = client.webhooks.unwrap(message.body, message.headers)
        assert event.type == "fine_tuning.job.succeeded"
        assert event.data.id == job_id

        tampered = message.body.replace(job_id.encode(), b"ftjob-forged")
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered, message.headers)
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.unwrap(message.body, message.headers, secret=new_secret())


def test_failed_and_cancelled_jobs_send_their_events(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    failed = _finish_a_job(emu, client, suffix="fail-mid-run")
    upload = client.files.create(file=("t.jsonl", training_jsonl(10)), purpose="fine-tune")
    cancelled = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload.id)
    client.fine_tuning.jobs.cancel(cancelled.id)
    events = [json.loads(m.body) for m in emu.drain_webhooks()]
    assert [(e["type"], e["data"]["id"]) for e in events] == [
        ("fine_tuning.job.failed", failed),
        ("fine_tuning.job.cancelled", cancelled.id),
    ]
    for message in emu.core.webhooks.messages():
        Webhook(emu.webhook_secret).verify(message.body, message.headers)


def test_background_delivery_to_a_real_endpoint(sdk: Callable[..., openai.OpenAI], receiver: Receiver) -> None:
    config = EmulatorConfig(speed=0, webhook_url=receiver.url, webhook_secret=SECRET)
    with OpenAIEmulator(config=config) as emu:
        client = sdk(emu.base_url)
        job_id = _finish_a_job(emu, client)
        receiver.wait_for(1)
        headers, body = receiver.received[0]
        assert headers["user-agent"].startswith("OpenAI/")
        assert headers["content-type"] == "application/json"
        event = client.webhooks.unwrap(body, headers, secret=SECRET)
        assert (event.type, event.data.id) == ("fine_tuning.job.succeeded", job_id)


def test_failed_delivery_is_retried_with_the_same_webhook_id(
    sdk: Callable[..., openai.OpenAI], receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    config = EmulatorConfig(
        speed=0, webhook_url=receiver.url, webhook_secret=SECRET, webhook_delivery="manual", webhook_max_attempts=3
    )
    with OpenAIEmulator(config=config) as emu:
        client = sdk(emu.base_url)
        _finish_a_job(emu, client)
        assert receiver.received == []  # manual mode: nothing leaves until drained
        (message,) = emu.drain_webhooks()
        assert len(receiver.received) == 3
        assert {h["webhook-id"] for h, _ in receiver.received} == {message.webhook_id}
        assert [a["status"] for a in message.attempts] == [500, 503, 200]
        assert message.delivered
        headers, body = receiver.received[-1]
        Webhook(SECRET).verify(body, headers)


def test_batch_events_are_sent(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    upload = client.files.create(file=("b.jsonl", b"{not json\n"), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    emu.run_until_idle()
    (message,) = emu.drain_webhooks()
    event = client.webhooks.unwrap(message.body, message.headers, secret=emu.webhook_secret)
    assert (event.type, event.data.id) == ("batch.failed", batch.id)
