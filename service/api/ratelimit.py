"""Per-API-key rate limits: token buckets, 429 problems with ``Retry-After`` and ``X-RateLimit-*`` headers.

Every API key has a bucket of ``rate_limit_burst`` requests that refills at ``rate_limit_per_s``. Requests without a
key, and requests whose key turns out to be invalid, draw from a stricter bucket per client address, so guessing keys
is as slow as any other anonymous traffic. The middleware needs no database: it learns which keys are valid from the
responses (anything but 401), and until it knows a key it also requires the address bucket to have room.

Buckets live in Redis when one is configured (``FINETUNE_REDIS_URL``, or a Redis broker), shared by every API process,
and in this process otherwise. If Redis fails the limiter falls back to its in-process buckets instead of failing
requests: a rate limit that takes the API down with it protects nothing.

Headers on every limited response: ``x-ratelimit-limit`` (the burst), ``x-ratelimit-remaining`` (whole requests left
now) and ``x-ratelimit-reset`` (seconds until the bucket is full again); a 429 also has ``retry-after`` (seconds until
the next request is allowed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.settings import Settings
from service.ui.session import COOKIE as UI_COOKIE
from service.ui.session import rate_identity

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
KNOWN_KEY_TTL_S = 300.0
KNOWN_KEYS_MAX = 50_000


@dataclass(frozen=True)
class Limits:
    rate_per_s: float
    burst: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        out = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset_s),
        }
        if not self.allowed:
            out["retry-after"] = str(self.retry_after_s)
        return out


def decide(allowed: bool, tokens: float, limits: Limits, cost: float) -> Decision:
    """The decision and its headers from the bucket's level after the request (``tokens``)."""
    # A bucket asked with cost 0 (a peek) refuses when not even one request would fit.
    allowed = allowed and tokens >= (0.0 if cost else 1.0)
    needed = max(cost, 1.0)
    return Decision(
        allowed=allowed,
        limit=limits.burst,
        remaining=max(0, math.floor(tokens)),
        reset_s=max(0, math.ceil((limits.burst - tokens) / limits.rate_per_s)),
        retry_after_s=0 if allowed else max(1, math.ceil((needed - tokens) / limits.rate_per_s)),
    )


class MemoryBuckets:
    """Token buckets in this process. Full buckets are forgotten when the table grows, so it stays bounded."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        # key -> (tokens, updated_at, full_at)
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self.max_entries = max_entries

    def take(self, key: str, limits: Limits, cost: float, now: float) -> tuple[bool, float]:
        with self._lock:
            tokens, ts, _ = self._buckets.get(key, (float(limits.burst), now, now))
            if now > ts:
                tokens, ts = min(float(limits.burst), tokens + (now - ts) * limits.rate_per_s), now
            allowed = tokens >= cost
            if allowed:
                tokens -= cost
            self._buckets[key] = (tokens, ts, ts + (limits.burst - tokens) / limits.rate_per_s)
            if len(self._buckets) > self.max_entries:
                self._prune(now)
            return allowed, tokens

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        self._buckets = {k: v for k, v in self._buckets.items() if v[2] > now}
        if len(self._buckets) > self.max_entries:
            # Still too many live buckets: keep the half furthest from full (the busiest clients).
            ordered = sorted(self._buckets.items(), key=lambda kv: kv[1][2], reverse=True)
            self._buckets = dict(ordered[: self.max_entries // 2])


# One round trip, atomic across API processes. The caller's clock is used (not Redis TIME) so the headers agree with
# the process that answers; a process whose clock runs behind the last writer's simply does not refill (now > ts).
_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisBuckets:
    """Buckets in Redis. ``connect`` makes an asyncio client; one is made per event loop, because an asyncio
    connection cannot be used from another loop (test clients run a loop of their own)."""

    def __init__(self, connect: Callable[[], Any], prefix: str = "finetune:ratelimit:") -> None:
        self.connect = connect
        self.prefix = prefix
        self._scripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _script(self) -> Any:
        loop = asyncio.get_running_loop()
        script = self._scripts.get(loop)
        if script is None:
            script = self._scripts[loop] = self.connect().register_script(_TAKE_SCRIPT)
        return script

    async def take(self, key: str, limits: Limits, cost: float, now: float) -> tuple[bool, float]:
        allowed, tokens = await self._script()(
            keys=[self.prefix + key], args=[repr(limits.rate_per_s), limits.burst, repr(now), repr(cost)]
        )
        return bool(int(allowed)), float(tokens)


def redis_url(settings: Settings) -> str | None:
    """Redis for the buckets: the configured one, else the broker when it is Redis."""
    if settings.redis_url:
        return settings.redis_url
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return None


class RateLimiter:
    def __init__(
        self,
        key_limits: Limits,
        anonymous_limits: Limits,
        *,
        redis_connect: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
        session_identity: Callable[[str | None], str | None] | None = None,
    ) -> None:
        self.session_identity = session_identity  # the web UI's session cookie -> its API key's bucket
        self.key_limits = key_limits
        self.anonymous_limits = anonymous_limits
        self.clock = clock
        self.memory = MemoryBuckets()
        self.redis = RedisBuckets(redis_connect) if redis_connect is not None else None
        self._redis_warned_at = -math.inf
        self._known_lock = threading.Lock()
        self._known: dict[str, float] = {}

    @classmethod
    def from_settings(cls, settings: Settings, redis_connect: Callable[[], Any] | None = None) -> RateLimiter | None:
        """None when limits are off (a rate of 0)."""
        if settings.rate_limit_per_s <= 0:
            return None
        url = redis_url(settings)
        if redis_connect is None and url:
            import redis.asyncio

            def redis_connect() -> Any:
                # Short timeouts: a slow Redis must not slow every request; the limiter falls back instead.
                return redis.asyncio.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

        return cls(
            Limits(settings.rate_limit_per_s, max(1, settings.rate_limit_burst)),
            Limits(max(settings.anonymous_rate_limit_per_s, 1e-6), max(1, settings.anonymous_rate_limit_burst)),
            redis_connect=redis_connect,
            session_identity=rate_identity(settings.server_secret()),
        )

    async def take(self, bucket: str, limits: Limits, cost: float = 1.0) -> Decision:
        now = self.clock()
        if self.redis is not None:
            try:
                allowed, tokens = await self.redis.take(bucket, limits, cost, now)
                return decide(allowed, tokens, limits, cost)
            except Exception as exc:  # Redis down or slow: limit in this process rather than fail the request
                if now - self._redis_warned_at > 60:
                    self._redis_warned_at = now
                    log.warning("rate limiter cannot reach Redis (%s); limiting in-process", type(exc).__name__)
        allowed, tokens = self.memory.take(bucket, limits, cost, now)
        return decide(allowed, tokens, limits, cost)

    def is_known(self, digest: str) -> bool:
        with self._known_lock:
            expires = self._known.get(digest)
        return expires is not None and expires > time.monotonic()

    def remember(self, digest: str) -> None:
        with self._known_lock:
            if len(self._known) >= KNOWN_KEYS_MAX:
                now = time.monotonic()
                self._known = {k: v for k, v in self._known.items() if v > now}
                if len(self._known) >= KNOWN_KEYS_MAX:
                    self._known.clear()
            self._known[digest] = time.monotonic() + KNOWN_KEY_TTL_S

    def forget(self, digest: str) -> None:
        with self._known_lock:
            self._known.pop(digest, None)


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def key_digest(token: str) -> str:
    """Bucket name of a key: a hash, so neither Redis nor memory ever holds a usable key."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


async def _reject(scope: Scope, receive: Receive, send: Send, decision: Decision, what: str) -> None:
    from service.api.problems import problem

    response = problem(
        429,
        "rate_limited",
        f"too many requests {what}; retry after {decision.retry_after_s} s",
        Request(scope),
        retry_after=decision.retry_after_s,
    )
    response.headers.update(decision.headers())
    await response(scope, receive, send)


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        limiter = self.limiter
        token = bearer_token(Headers(scope=scope))
        address_bucket = f"addr:{client_address(scope)}"
        digest = key_digest(token) if token else None
        ui_bucket = None
        if digest is None and limiter.session_identity is not None and scope["path"].startswith("/ui/"):
            ui_bucket = limiter.session_identity(Request(scope).cookies.get(UI_COOKIE))
        if ui_bucket is not None:
            decision = await limiter.take(ui_bucket, limiter.key_limits)
            what = "for this API key's web UI sessions"
        elif digest is None:
            decision = await limiter.take(address_bucket, limiter.anonymous_limits)
            what = "without an API key from this address"
        else:
            if not limiter.is_known(digest):
                # A key not yet seen to work may be a guess: the address must still have room for one.
                peek = await limiter.take(address_bucket, limiter.anonymous_limits, cost=0)
                if not peek.allowed:
                    await _reject(scope, receive, send, peek, "with unrecognised API keys from this address")
                    return
            decision = await limiter.take(f"key:{digest}", limiter.key_limits)
            what = "for this API key"
        if not decision.allowed:
            await _reject(scope, receive, send, decision, what)
            return

        status = 0
        extra = [(k.encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
        if digest is not None:
            if status == 401:
                # A wrong or revoked key costs the address, like a request without one.
                limiter.forget(digest)
                await limiter.take(address_bucket, limiter.anonymous_limits)
            elif status:
                limiter.remember(digest)
