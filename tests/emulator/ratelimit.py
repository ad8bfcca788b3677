"""Per-model request and token limits as continuously refilled token buckets, with OpenAI's headers."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .clock import EmulatorClock
from .config import RateLimit
from .errors import ApiError


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration, which OpenAI uses in reset headers: "6m0s", "1.5s", "12ms", "0s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass
class _Bucket:
    capacity: float
    level: float
    updated: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def seconds_until(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate) if self.rate > 0 else math.inf


class RateLimiter:
    def __init__(
        self, *, clock: EmulatorClock, limits: dict[str, RateLimit], default: RateLimit, organization: str
    ) -> None:
        self._clock = clock
        self._limits = limits
        self._default = default
        self._org = organization
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[_Bucket, _Bucket]] = {}

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def _spec(self, names: tuple[str, ...]) -> RateLimit:
        for name in names:
            if name in self._limits:
                return self._limits[name]
        return self._default

    def _buckets_for(self, key: str, spec: RateLimit, now: float) -> tuple[_Bucket, _Bucket]:
        pair = self._buckets.get(key)
        if pair is None:
            pair = (
                _Bucket(spec.requests_per_minute, spec.requests_per_minute, now),
                _Bucket(spec.tokens_per_minute, spec.tokens_per_minute, now),
            )
            self._buckets[key] = pair
        for bucket in pair:
            bucket.refill(now)
        return pair

    def _headers(self, requests: _Bucket, tokens: _Bucket) -> dict[str, str]:
        real = self._clock.real_seconds
        return {
            "x-ratelimit-limit-requests": str(int(requests.capacity)),
            "x-ratelimit-limit-tokens": str(int(tokens.capacity)),
            "x-ratelimit-remaining-requests": str(max(0, math.floor(requests.level))),
            "x-ratelimit-remaining-tokens": str(max(0, math.floor(tokens.level))),
            "x-ratelimit-reset-requests": go_duration(real(requests.seconds_until(requests.capacity))),
            "x-ratelimit-reset-tokens": go_duration(real(tokens.seconds_until(tokens.capacity))),
        }

    def take(self, model: str, *, aliases: tuple[str, ...] = (), tokens: int = 0) -> dict[str, str]:
        """Spend one request and `tokens` from `model`'s buckets; returns the headers, or raises a 429."""
        now = self._clock.now()
        spec = self._spec((model, *aliases))
        with self._lock:
            req_bucket, tok_bucket = self._buckets_for(model, spec, now)
            if tokens > tok_bucket.capacity:
                raise ApiError(
                    429,
                    f"Request too large for {model} in organization {self._org} on tokens per min (TPM): "
                    f"Limit {int(tok_bucket.capacity)}, Requested {tokens}. "
                    "The input or output tokens must be reduced in order to run successfully.",
                    type="tokens",
                    code="rate_limit_exceeded",
                    headers=self._headers(req_bucket, tok_bucket),
                )
            for bucket, amount, kind, unit in (
                (req_bucket, 1, "requests", "RPM"),
                (tok_bucket, tokens, "tokens", "TPM"),
            ):
                if amount and bucket.level < amount:
                    wait = self._clock.real_seconds(bucket.seconds_until(amount))
                    used = int(bucket.capacity - math.floor(bucket.level))
                    headers = self._headers(req_bucket, tok_bucket)
                    headers["retry-after"] = str(max(1, math.ceil(wait)))
                    headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
                    raise ApiError(
                        429,
                        f"Rate limit reached for {model} in organization {self._org} on {kind} per min ({unit}): "
                        f"Limit {int(bucket.capacity)}, Used {used}, Requested {amount}. "
                        f"Please try again in {go_duration(wait)}. "
                        "Visit https://platform.openai.com/account/rate-limits to learn more.",
                        type=kind,
                        code="rate_limit_exceeded",
                        headers=headers,
                    )
            req_bucket.level -= 1
            tok_bucket.level -= tokens
            return self._headers(req_bucket, tok_bucket)

    def peek(self, model: str) -> dict[str, str]:
        now = self._clock.now()
        with self._lock:
            return self._headers(*self._buckets_for(model, self._spec((model,)), now))
