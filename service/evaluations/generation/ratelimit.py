"""Client-side rate limiting for OpenAI-compatible endpoints: requests/min and tokens/min buckets that learn from
``x-ratelimit-*`` headers and pause everyone after a 429.

Pacing is even: a bucket refills at limit/60 per second and holds at most ``burst_seconds`` of refill, so a run never
spends a minute's allowance in its first second. Providers enforce per-minute limits over shorter windows (OpenAI says
so in its rate-limit guide), so that burst would be answered with 429s.

Tokens are reserved from an estimate before a call and corrected with the usage the response reports. Response headers
can only lower our view of what is left (``remaining`` minus requests we sent after that one), never raise it: a stale
header then costs a little throughput, never a 429.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.providers.openai.headers import RateLimitHeaders

_EPSILON_S = 1e-6


class TokenBucket:
    """A continuously refilled bucket. ``rate`` is per second; None means unlimited. The level may go negative when
    a reservation is corrected upwards; the debt is repaid before the next reservation."""

    def __init__(self, rate: float | None, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if self.rate is not None and now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` is available (amounts above capacity wait for a full bucket)."""
        if self.rate is None:
            return 0.0
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate if self.rate > 0 else math.inf

    def reconfigure(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = min(self.level, capacity)


@dataclass(frozen=True)
class Reservation:
    seq: int
    tokens: int


class RateLimiter:
    """Requests/min and tokens/min limits for one model on one endpoint, shared by all concurrent callers.

    ``acquire`` waits (first come, first served) until the request and its estimated tokens fit and no 429 pause is
    in force. Configured limits are ceilings; limits read from headers can only lower them.
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_seconds: float = 1.0,
        learn_from_headers: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if burst_seconds <= 0:
            raise ValueError("burst_seconds must be positive")
        self._clock = clock
        self._sleep = sleep
        self._burst = burst_seconds
        self._learn = learn_from_headers
        self._configured = {"requests": requests_per_minute, "tokens": tokens_per_minute}
        self.limits: dict[str, float | None] = dict(self._configured)
        now = clock()
        self._buckets = {
            kind: TokenBucket(*self._rate_capacity(self.limits[kind]), now) for kind in ("requests", "tokens")
        }
        self._paused_until = 0.0
        self._seq = 0
        self._lock = asyncio.Lock()

    def _rate_capacity(self, per_minute: float | None) -> tuple[float | None, float]:
        if per_minute is None:
            return None, math.inf
        rate = per_minute / 60.0
        return rate, max(1.0, rate * self._burst)

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def bucket_level(self, kind: str) -> float:
        bucket = self._buckets[kind]
        bucket.refill(self._clock())
        return bucket.level

    async def acquire(self, tokens: int) -> Reservation:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                req, tok = self._buckets["requests"], self._buckets["tokens"]
                req.refill(now)
                tok.refill(now)
                wait = max(req.wait_time(1), tok.wait_time(tokens))
                # A microsecond short is float rounding of the refill, not a reason to sleep again.
                if wait <= _EPSILON_S:
                    req.level -= 1
                    tok.level -= tokens
                    self._seq += 1
                    return Reservation(self._seq, tokens)
                await self._sleep(wait)

    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Correct a reservation with the tokens actually counted (0 for a request the server did not count)."""
        bucket = self._buckets["tokens"]
        bucket.refill(self._clock())
        bucket.level = min(bucket.capacity, bucket.level + reservation.tokens - actual_tokens)

    def refund_request(self) -> None:
        """Give back the request slot of a call the server rejected without counting it (a 429)."""
        bucket = self._buckets["requests"]
        bucket.refill(self._clock())
        bucket.level = min(bucket.capacity, bucket.level + 1)

    def observe(self, headers: RateLimitHeaders, reservation: Reservation) -> None:
        """Learn limits from a response and lower the local levels to what the server says is left, minus what we
        sent after the request this response answers."""
        if not self._learn:
            return
        now = self._clock()
        sent_after = self._seq - reservation.seq
        for kind in ("requests", "tokens"):
            bucket = self._buckets[kind]
            bucket.refill(now)
            limit = getattr(headers, f"limit_{kind}")
            if limit is not None and limit > 0:
                ceiling = self._configured[kind]
                effective = float(limit) if ceiling is None else min(float(ceiling), float(limit))
                if effective != self.limits[kind]:
                    self.limits[kind] = effective
                    bucket.reconfigure(*self._rate_capacity(effective))  # type: ignore[arg-type]
            remaining = getattr(headers, f"remaining_{kind}")
            if remaining is not None and bucket.rate is not None:
                # Tokens of later requests are not known here; requests are one each.
                in_between = sent_after if kind == "requests" else 0
                bucket.level = min(bucket.level, remaining - in_between)

    def pause(self, seconds: float) -> None:
        """Stop all acquisitions for ``seconds`` (after a 429) and start again from empty buckets, so the restart is
        paced instead of a burst."""
        now = self._clock()
        self._paused_until = max(self._paused_until, now + seconds)
        for bucket in self._buckets.values():
            bucket.refill(now)
            if bucket.rate is not None:
                bucket.level = min(bucket.level, 0.0)
                # Refill starts when the pause ends.
                bucket.updated = max(bucket.updated, self._paused_until)
