"""Emulated time: real time scaled by a speed factor, plus whatever tests add by hand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class EmulatorClock:
    """Unix time in emulated seconds.

    `now() = start + (real elapsed) * speed + manual offset`. With speed 0 the clock stands still until `advance()`,
    so tests step through a job's life without sleeping.
    """

    def __init__(
        self, *, speed: float = 1.0, start: float | None = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._speed = speed
        self._monotonic = monotonic
        self._real_origin = monotonic()
        self._start = time.time() if start is None else start
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        with self._lock:
            return self._start + (self._monotonic() - self._real_origin) * self._speed + self._offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        with self._lock:
            self._offset += seconds
        return self.now()

    def real_seconds(self, emulated_seconds: float) -> float:
        """How long a client must really wait for `emulated_seconds` to pass (used for retry-after)."""
        if self._speed <= 0:
            return emulated_seconds
        return emulated_seconds / self._speed
