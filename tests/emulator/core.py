"""The emulator's state and machinery, independent of HTTP: what routes, control endpoints and tests all act on."""

from __future__ import annotations

import copy
import random
import threading
from typing import Any

from . import batches, jobs
from .catalog import Catalog
from .clock import EmulatorClock
from .config import EmulatorConfig, FaultRule
from .faults import FaultInjector
from .ids import IdFactory
from .ratelimit import RateLimiter
from .store import Store
from .webhooks import WebhookDispatcher, WebhookMessage, new_secret


class EmulatorCore:
    def __init__(self, config: EmulatorConfig, *, clock: EmulatorClock | None = None) -> None:
        self.config = config
        self.clock = clock or EmulatorClock(speed=config.speed)
        self.store = Store()
        self.catalog = Catalog(config.catalog)
        self.correct_answers: dict[str, str] = dict(config.correct_answers)
        # Set while the server shuts down, so deliberately held requests let go at once.
        self.stopping = threading.Event()
        self.webhook_secret = config.webhook_secret or new_secret()
        self.ids = IdFactory(config.id_seed)
        self.rng = random.Random(config.seed)
        # Copies: firing a rule counts it down, and the caller's config must stay as it was given.
        self._build_parts([copy.copy(rule) for rule in config.faults])
        self.webhooks = WebhookDispatcher(
            ids=self.ids,
            secret=self.webhook_secret,
            url=config.webhook_url,
            background=config.webhook_delivery == "background",
            max_attempts=config.webhook_max_attempts,
            timeout_seconds=config.webhook_timeout_seconds,
        )

    def _build_parts(self, faults: list[FaultRule]) -> None:
        # Ids are not rebuilt on reset: a client still holding an old id must get a 404, not someone else's object.
        self.limiter = RateLimiter(
            clock=self.clock,
            limits=self.config.rate_limits,
            default=self.config.default_rate_limit,
            organization=self.config.organization_id,
        )
        self.faults = FaultInjector(faults, self.config.seed)

    def tick(self) -> float:
        """Bring every job and batch up to the clock's present."""
        with self.store.lock:
            now = self.clock.now()
            for job in self.store.jobs.values():
                jobs.advance(self, job, now)
            for batch in self.store.batches.values():
                batches.advance(self, batch, now)
            return now

    def advance(self, seconds: float) -> float:
        self.clock.advance(seconds)
        return self.tick()

    def busy(self) -> bool:
        with self.store.lock:
            return any(j.status in ("validating_files", "queued", "running") for j in self.store.jobs.values()) or any(
                not b.terminal for b in self.store.batches.values()
            )

    def run_until_idle(self, *, step: float = 60.0, max_seconds: float = 7 * 24 * 3600.0) -> float:
        """Advance the clock until no job or batch is moving (paused jobs do not count); returns seconds advanced."""
        advanced = 0.0
        self.tick()
        while self.busy():
            if advanced >= max_seconds:
                raise TimeoutError(f"jobs or batches still active after {max_seconds} emulated seconds")
            self.advance(step)
            advanced += step
        return advanced

    def add_fault(self, rule: FaultRule) -> FaultRule:
        return self.faults.add(rule)

    def drain_webhooks(self) -> list[WebhookMessage]:
        self.tick()
        return self.webhooks.drain()

    def reset(self) -> None:
        """Forget every object, counter, fault and bucket; keep configuration, clock and secret."""
        with self.store.lock:
            self.store.clear()
            self.correct_answers = dict(self.config.correct_answers)
            self._build_parts([])
            self.webhooks.clear()

    def calls(self) -> dict[str, int]:
        with self.store.lock:
            return dict(self.store.calls)

    def dump(self) -> dict[str, Any]:
        with self.store.lock:
            return {
                "now": self.clock.now(),
                "speed": self.clock.speed,
                "files": [f.to_api() for f in self.store.files.values()],
                "jobs": [j.to_api() for j in self.store.jobs.values()],
                "batches": [b.to_api() for b in self.store.batches.values()],
                "fine_tuned_models": sorted(self.store.fine_tuned_models),
                "calls": dict(self.store.calls),
                "faults": [rule.to_dict() for rule in self.faults.rules()],
                "webhooks": [m.to_dict() for m in self.webhooks.messages()],
            }
