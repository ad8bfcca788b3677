"""`OpenAIEmulator`: the app served by uvicorn on a background thread, plus the helpers tests call directly."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, overload

import uvicorn

from .app import create_app
from .clock import EmulatorClock
from .config import EmulatorConfig, FaultRule
from .core import EmulatorCore
from .webhooks import WebhookMessage


class OpenAIEmulator:
    """A real HTTP server that speaks enough of the OpenAI API for this project.

    with OpenAIEmulator(config=EmulatorConfig(speed=0)) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="sk-test")
    """

    def __init__(self, config: EmulatorConfig | None = None, *, clock: EmulatorClock | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.core = EmulatorCore(self.config, clock=clock)
        self.app = create_app(self.core)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.port: int | None = None

    # Lifecycle

    def start(self) -> OpenAIEmulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP, and
        # without it every response waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
                timeout_keep_alive=30,
            )
        )
        self._server = server
        self._stop.clear()
        self.core.stopping.clear()
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="emulator-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator's HTTP server did not start")
            time.sleep(0.005)
        self.core.webhooks.start()
        if self.core.clock.speed > 0:
            self._ticker = threading.Thread(target=self._tick_forever, name="emulator-clock", daemon=True)
            self._ticker.start()
        return self

    def _tick_forever(self) -> None:
        # Jobs move (and webhooks fire) with the clock even when nobody polls.
        while not self._stop.wait(self.config.tick_interval):
            self.core.tick()

    def stop(self) -> None:
        self._stop.set()
        self.core.stopping.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._server = None
        self.core.webhooks.stop()

    def __enter__(self) -> OpenAIEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Addresses

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the emulator is not running")
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API's base URL: ``/v1``, or an Azure resource's ``/openai/v1``."""
        return f"{self.url}/openai/v1" if self.config.azure is not None else f"{self.url}/v1"

    @property
    def endpoint(self) -> str:
        """An Azure resource's endpoint (what ``https://<resource>.openai.azure.com`` is to Azure)."""
        return self.url

    @property
    def webhook_secret(self) -> str:
        return self.core.webhook_secret

    # Test helpers

    def now(self) -> float:
        return self.core.clock.now()

    def advance(self, seconds: float) -> float:
        """Move emulated time forward and apply it to every job and batch; returns the new time."""
        return self.core.advance(seconds)

    def run_until_idle(self, *, step: float = 60.0, max_seconds: float = 7 * 24 * 3600.0) -> float:
        return self.core.run_until_idle(step=step, max_seconds=max_seconds)

    def add_fault(self, route: str, kind: str, **options: Any) -> FaultRule:
        return self.core.add_fault(FaultRule(route=route, kind=kind, **options))

    def clear_faults(self) -> None:
        self.core.faults.clear()

    @overload
    def calls(self) -> dict[str, int]: ...

    @overload
    def calls(self, route: str) -> int: ...

    def calls(self, route: str | None = None) -> dict[str, int] | int:
        """Requests received per route template ({"POST /v1/fine_tuning/jobs": 1, ...}; faulted and rejected ones
        included), or the count for one route."""
        counts = self.core.calls()
        return counts if route is None else counts.get(route, 0)

    def call_count(self, route: str) -> int:
        return self.calls(route)

    def drain_webhooks(self) -> list[WebhookMessage]:
        return self.core.drain_webhooks()

    def deploy(self, name: str, model: str) -> None:
        """Azure: create deployment ``name`` serving ``model`` (what ``az cognitiveservices account deployment
        create`` does on the control plane)."""
        with self.core.store.lock:
            self.core.store.deployments[name] = model

    def set_correct_answers(self, answers: dict[str, str]) -> None:
        with self.core.store.lock:
            self.core.correct_answers = dict(answers)

    def reset(self) -> None:
        self.core.reset()

    def state(self) -> dict[str, Any]:
        self.core.tick()
        return self.core.dump()
