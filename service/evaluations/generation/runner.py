"""One chat completion at a time, done right: rate limited, retried, measured.

``ChatRunner`` owns an ``AsyncOpenAI`` client with the SDK's own retries turned off (the SDK would retry a 429 without
telling the shared limiter, and at most twice), a limiter per model, and a semaphore that caps requests in flight.
It is used by ``generate_all`` and, through ``JudgeChatClient``, by LLM judges, so both share one budget.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from service import chat
from service.evaluations.generation.ratelimit import RateLimiter, Reservation
from service.evaluations.generation.types import (
    ClientConfig,
    ErrorKind,
    GenerationStats,
    GenRequest,
    GenResult,
    RateLimits,
)
from service.providers.openai.client import async_client
from service.providers.openai.errors import Classified, classify, is_call_failure
from service.providers.openai.headers import RateLimitHeaders

TokenEstimator = Callable[[GenRequest], int]


class FatalGenerationError(Exception):
    """An error every further request would hit too (bad key, no quota, unknown model): the run must stop."""

    def __init__(self, message: str, *, kind: ErrorKind, status_code: int | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code


def estimate_tokens(request: GenRequest, default_completion_tokens: int = 512) -> int:
    """A cheap upper-leaning estimate of the tokens a request will count against tokens/min: about four characters
    per prompt token plus OpenAI's per-message overhead, plus the completion budget (max tokens, times n)."""
    chars = sum(len(chat.text_of(m.get("content"))) + len(str(m.get("name", ""))) for m in request.messages)
    prompt = -(-chars // 4) + 3 * len(request.messages) + 3
    params = request.params
    budget = params.get("max_completion_tokens") or params.get("max_tokens") or default_completion_tokens
    return int(prompt + int(budget))


def _describe(failure: Classified) -> str:
    return f"{failure.status}: {failure.message}" if failure.status is not None else failure.message


class ChatRunner:
    """Make chat completions against one endpoint within ``limits``. Use as ``async with ChatRunner(...) as r``."""

    def __init__(
        self,
        client_config: ClientConfig | None = None,
        limits: RateLimits | None = None,
        *,
        client: AsyncOpenAI | None = None,
        token_estimator: TokenEstimator | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.limits = limits or RateLimits()
        if client is None:
            if client_config is None:
                raise ValueError("ChatRunner needs client_config or client")
            client = async_client(client_config, max_connections=self.limits.max_concurrency)
            self._owns_client = True
        else:
            # We own retries; a caller's client with SDK retries on would hide 429s from the limiter.
            client = client.with_options(max_retries=0)
            self._owns_client = False
        self._client = client
        self._estimate = token_estimator or (lambda r: estimate_tokens(r, self.limits.default_completion_tokens))
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._gate = asyncio.Semaphore(self.limits.max_concurrency)
        self._limiters: dict[str, RateLimiter] = {}
        self._latencies: list[float] = []
        self.in_flight = 0
        self.stats = GenerationStats()

    async def __aenter__(self) -> ChatRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()

    def limiter(self, model: str) -> RateLimiter:
        limiter = self._limiters.get(model)
        if limiter is None:
            lim = self.limits
            limiter = RateLimiter(
                requests_per_minute=lim.requests_per_minute,
                tokens_per_minute=lim.tokens_per_minute,
                burst_seconds=lim.burst_seconds,
                learn_from_headers=lim.learn_from_headers,
                clock=self._clock,
                sleep=self._sleep,
            )
            self._limiters[model] = limiter
        return limiter

    def snapshot_stats(self) -> GenerationStats:
        stats = self.stats.model_copy()
        if self._latencies:
            p50, p95 = np.percentile(np.array(self._latencies), [50, 95])
            stats.latency_p50_s, stats.latency_p95_s = float(p50), float(p95)
        stats.limits = {
            model: {"requests_per_minute": lim.limits["requests"], "tokens_per_minute": lim.limits["tokens"]}
            for model, lim in self._limiters.items()
        }
        return stats

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"): spreads retries of a burst apart.
        cap = min(self.limits.backoff_max_s, self.limits.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, cap)

    async def _attempt(self, request: GenRequest) -> tuple[Any, float]:
        async with self._gate:
            self.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.in_flight)
            self.stats.attempts += 1
            started = self._clock()
            try:
                raw = await self._client.chat.completions.with_raw_response.create(
                    model=request.model, messages=request.messages, **request.params
                )
            finally:
                self.in_flight -= 1
            return raw, self._clock() - started

    async def run(self, request: GenRequest) -> GenResult:
        """The result of ``request`` after retries. Raises ``FatalGenerationError`` for errors that doom the run."""
        limiter = self.limiter(request.model)
        first_start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            estimate = max(1, int(self._estimate(request)))
            reservation = await limiter.acquire(estimate)
            attempt_start = self._clock()
            try:
                raw, latency = await self._attempt(request)
            except Exception as exc:
                if not is_call_failure(exc):
                    raise
                failure, cause = classify(exc), exc
            else:
                return self._success(request, raw, latency, limiter, reservation, attempt, first_start)
            latency = self._clock() - attempt_start
            self._count_failure(failure)
            if failure.rate_limits is not None:
                limiter.observe(failure.rate_limits, reservation)
            if failure.kind == "rate_limited":
                # Rejected before any work: it cost the server nothing, so it costs our buckets nothing either.
                limiter.settle(reservation, 0)
                limiter.refund_request()
            if failure.fatal:
                # Chained, so callers can still tell what it was (``service.net.is_refusal`` follows the chain).
                raise FatalGenerationError(_describe(failure), kind=failure.kind, status_code=failure.status) from cause
            delay = self._retry_delay(failure, attempt, estimate)
            if delay is None:
                if failure.kind == "rate_limited":
                    self.stats.rate_limited_unretried += 1
                return self._failed(request, failure, attempt, first_start, latency)
            self.stats.retries += 1
            if failure.kind == "rate_limited":
                limiter.pause(delay)
            else:
                await self._sleep(delay)

    def _retry_delay(self, failure: Classified, attempt: int, estimate: int) -> float | None:
        """Seconds to wait before retrying, or None when the request must fail now."""
        if not failure.retryable or attempt > self.limits.max_retries:
            return None
        if failure.retry_after is not None:
            if failure.retry_after > self.limits.max_retry_after_s:
                return None
            # Never earlier than the server asked; a little later, spread, so paused callers do not all return at once.
            return failure.retry_after + self._rng.uniform(0, min(1.0, 0.1 * failure.retry_after + 0.01))
        if failure.kind == "rate_limited" and failure.rate_limits is not None:
            hints = [
                failure.rate_limits.seconds_until("requests", 1),
                failure.rate_limits.seconds_until("tokens", estimate),
            ]
            known = [h for h in hints if h is not None]
            if known:
                return min(max(known), self.limits.max_retry_after_s) + self._rng.uniform(0, 0.05)
        return self._backoff(attempt)

    def _count_failure(self, failure: Classified) -> None:
        if failure.kind == "rate_limited":
            self.stats.rate_limited += 1
        elif failure.kind == "server_error":
            self.stats.server_errors += 1
        elif failure.kind == "timeout":
            self.stats.timeouts += 1
        elif failure.kind == "connection":
            self.stats.connection_errors += 1

    def _success(
        self,
        request: GenRequest,
        raw: Any,
        latency: float,
        limiter: RateLimiter,
        reservation: Reservation,
        attempts: int,
        first_start: float,
    ) -> GenResult:
        completion = raw.parse()
        usage = getattr(completion, "usage", None)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        limiter.settle(reservation, input_tokens + output_tokens if usage is not None else reservation.tokens)
        limiter.observe(RateLimitHeaders.parse(raw.headers), reservation)
        self._latencies.append(latency)
        self.stats.succeeded += 1
        self.stats.input_tokens += input_tokens
        self.stats.output_tokens += output_tokens
        choice = completion.choices[0] if completion.choices else None
        message = choice.message if choice is not None else None
        return GenResult(
            key=request.key,
            ok=True,
            output=(message.content or "") if message is not None else "",
            finish_reason=choice.finish_reason if choice is not None else None,
            refusal=getattr(message, "refusal", None),
            model=completion.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=latency,
            total_s=self._clock() - first_start,
            attempts=attempts,
            request_id=raw.request_id,
        )

    def _failed(
        self, request: GenRequest, failure: Classified, attempts: int, first_start: float, latency: float
    ) -> GenResult:
        self.stats.failed += 1
        return GenResult(
            key=request.key,
            ok=False,
            latency_s=latency,
            total_s=self._clock() - first_start,
            attempts=attempts,
            error=_describe(failure),
            error_kind=failure.kind,
            status_code=failure.status,
            request_id=failure.request_id,
        )
