"""Outgoing webhooks the way OpenAI sends them: Standard Webhooks signatures over `{id, object, type, created_at,
data: {id}}`, at least once, retried with the same `webhook-id`.

Events are queued while the state lock is held and delivered outside it, so a receiver may call back into the
emulator without deadlocking.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from .ids import IdFactory

USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class WebhookMessage:
    webhook_id: str
    event: dict[str, Any]
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    delivered: bool = False

    @property
    def type(self) -> str:
        return self.event["type"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "webhook_id": self.webhook_id,
            "event": self.event,
            "headers": self.headers,
            "attempts": self.attempts,
            "delivered": self.delivered,
        }


class WebhookDispatcher:
    def __init__(
        self,
        *,
        ids: IdFactory,
        secret: str,
        url: str | None,
        background: bool,
        max_attempts: int = 3,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.secret = secret
        self.url = url
        self._signer = Webhook(secret)
        self._ids = ids
        self._background = background
        self._max_attempts = max(1, max_attempts)
        self._timeout = timeout_seconds
        self._cond = threading.Condition()
        self._pending: list[WebhookMessage] = []
        self._all: list[WebhookMessage] = []
        self._drained = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._deliver_lock = threading.Lock()

    def emit(self, event_type: str, object_id: str, created_at: int) -> WebhookMessage:
        event = {
            "id": self._ids.new("webhook_event"),
            "object": "event",
            "type": event_type,
            "created_at": created_at,
            "data": {"id": object_id},
        }
        message = WebhookMessage(
            webhook_id=self._ids.new("webhook_message"), event=event, body=json.dumps(event).encode()
        )
        self._sign(message)
        with self._cond:
            self._all.append(message)
            if self.url:
                self._pending.append(message)
            self._cond.notify_all()
        return message

    def _sign(self, message: WebhookMessage) -> None:
        # The signature time is real time, not emulated time: receivers check it against their own clock (300 s).
        now = datetime.now(UTC)
        message.headers = {
            "webhook-id": message.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(message.webhook_id, now, message.body.decode()),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }

    def messages(self) -> list[WebhookMessage]:
        with self._cond:
            return list(self._all)

    def flush(self) -> None:
        """Deliver everything pending now, in the caller's thread."""
        with self._deliver_lock:
            while True:
                with self._cond:
                    if not self._pending:
                        return
                    message = self._pending.pop(0)
                self._deliver(message)

    def drain(self) -> list[WebhookMessage]:
        """Deliver what is pending, then return the messages emitted since the previous drain."""
        self.flush()
        with self._cond:
            fresh = self._all[self._drained :]
            self._drained = len(self._all)
        return fresh

    def _deliver(self, message: WebhookMessage) -> None:
        assert self.url is not None
        with httpx.Client(timeout=self._timeout) as client:
            for attempt in range(self._max_attempts):
                self._sign(message)
                record: dict[str, Any] = {"at": time.time(), "status": None, "error": None}
                try:
                    response = client.post(self.url, content=message.body, headers=message.headers)
                    record["status"] = response.status_code
                    message.attempts.append(record)
                    if 200 <= response.status_code < 300:
                        message.delivered = True
                        return
                except httpx.HTTPError as exc:
                    record["error"] = f"{type(exc).__name__}: {exc}"
                    message.attempts.append(record)
                if attempt + 1 < self._max_attempts:
                    time.sleep(0.05 * 2**attempt)

    def start(self) -> None:
        if not self._background or not self.url or self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="emulator-webhooks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            self.flush()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def clear(self) -> None:
        with self._cond:
            self._pending.clear()
            self._all.clear()
            self._drained = 0
