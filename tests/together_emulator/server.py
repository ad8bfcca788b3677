"""``TogetherEmulator``: the app served on a loopback port in a thread, and the helpers tests call directly."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from types import TracebackType
from typing import Any

from emulator.clock import EmulatorClock
from emulator.config import FaultRule
from emulator.faults import FaultInjector
from helpers import serve

from .app import KEY_PREFIX, create_app
from .state import JobTiming, TogetherState

API_KEY = f"{KEY_PREFIX}test-key"


class TogetherEmulator:
    """with TogetherEmulator(speed=200) as emu: ... emu.base_url, emu.api_key ..."""

    def __init__(self, *, speed: float = 1.0, timing: JobTiming | None = None, seed: int = 0) -> None:
        self.clock = EmulatorClock(speed=speed)
        self.state = TogetherState(clock=self.clock, timing=timing or JobTiming())
        self.faults = FaultInjector([], seed)
        self._calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self.app = create_app(self.state, self.faults, self._calls)
        self._serving: contextlib.ExitStack | None = None
        self.url: str | None = None
        self.api_key = API_KEY

    def start(self) -> TogetherEmulator:
        stack = contextlib.ExitStack()
        self.url = stack.enter_context(serve(self.app))
        self._serving = stack
        return self

    def stop(self) -> None:
        if self._serving is not None:
            self._serving.close()
            self._serving = None

    def __enter__(self) -> TogetherEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self.url is None:
            raise RuntimeError("the emulator is not running")
        return f"{self.url}/v1"

    def advance(self, seconds: float) -> float:
        now = self.clock.advance(seconds)
        self.state.tick()
        return now

    def add_fault(self, route: str, kind: str, **options: Any) -> FaultRule:
        return self.faults.add(FaultRule(route=route, kind=kind, **options))

    def fail_jobs(self, match: str, message: str) -> None:
        """Jobs whose model or suffix contains ``match`` end in status error with ``message``."""
        with self.state.lock:
            self.state.failures[match] = message

    def calls(self, route: str) -> int:
        """Requests received on a route template, e.g. "POST /v1/fine-tunes" (faulted ones included)."""
        return self._calls[route]

    def dump(self) -> dict[str, Any]:
        return self.state.dump()
